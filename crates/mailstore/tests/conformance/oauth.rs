//! OAuth settings per domain (issue 22, item 3) on both backends: set, replaced, read back,
//! cleared, gone with their domain; `oauth_anywhere` follows; an unknown domain is `NotFound`.

use super::*;

fn settings(jwks: JwksSource) -> OAuthConfig {
    OAuthConfig {
        issuer: "https://id.a.example".into(),
        jwks,
        audience: "pophost".into(),
        claim: DEFAULT_CLAIM.into(),
        algorithms: vec![JwtAlgorithm::Rs256, JwtAlgorithm::EdDsa],
    }
}

async fn oauth_settings_round_trip_per_domain(b: impl Backend) {
    let s = b.open(lock("n1", 30_000)).await;
    let a = domain("a.example");
    let other = domain("b.example");
    s.add_domain(&a).await.expect("domain");
    s.add_domain(&other).await.expect("domain");
    assert_eq!(s.oauth_settings(&a).await.expect("read"), None);
    assert!(!s.oauth_anywhere().await.expect("anywhere"));

    let by_url = settings(JwksSource::Url("https://id.a.example/jwks".into()));
    s.set_oauth_settings(&a, &by_url).await.expect("set");
    assert_eq!(s.oauth_settings(&a).await.expect("read"), Some(by_url));
    assert_eq!(s.oauth_settings(&other).await.expect("read"), None);
    assert!(s.oauth_anywhere().await.expect("anywhere"));

    // Replacing switches the key source wholly: no URL is left behind next to the file.
    let mut by_file = settings(JwksSource::File("/etc/pophost/jwks.json".into()));
    by_file.claim = "upn".into();
    by_file.algorithms = vec![JwtAlgorithm::Es256];
    s.set_oauth_settings(&a, &by_file).await.expect("replace");
    assert_eq!(
        s.oauth_settings(&a).await.expect("read"),
        Some(by_file.clone())
    );

    let none = OAuthConfig {
        algorithms: Vec::new(),
        ..by_file.clone()
    };
    assert!(matches!(
        s.set_oauth_settings(&other, &none).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.set_oauth_settings(&domain("nowhere.example"), &by_file)
            .await,
        Err(StoreError::NotFound(_))
    ));

    assert!(s.clear_oauth_settings(&a).await.expect("clear"));
    assert!(!s.clear_oauth_settings(&a).await.expect("clear again"));
    assert_eq!(s.oauth_settings(&a).await.expect("read"), None);
    assert!(!s.oauth_anywhere().await.expect("anywhere"));

    // Removing the domain takes its settings along.
    s.set_oauth_settings(&other, &by_file).await.expect("set");
    s.remove_domain(&other, false).await.expect("remove");
    assert!(!s.oauth_anywhere().await.expect("anywhere"));
}

/// Only the three asymmetric algorithms parse, by their exact JOSE names.
#[test]
fn algorithm_names_are_exact() {
    assert_eq!(
        JwtAlgorithm::parse_list("RS256, ES256,EdDSA"),
        Ok(JwtAlgorithm::ALL.to_vec())
    );
    for bad in ["none", "HS256", "rs256", "RS512", "", "RS256,RS256"] {
        assert!(JwtAlgorithm::parse_list(bad).is_err(), "{bad}");
    }
}

stories!(oauth_settings_round_trip_per_domain);

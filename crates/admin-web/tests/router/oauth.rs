//! A domain's OAuth settings over the API: set, read, replaced, cleared; a domain admin reaches
//! only their domains and may name only an https key URL; every change audited.

use axum::http::{Method, StatusCode};
use mailstore::{JwksSource, OAuthSettings, Scope};
use serde_json::json;

use crate::support::{Env, domain};

#[tokio::test]
async fn oauth_settings_over_the_api_are_scoped_validated_and_audited() {
    let env = Env::with_domains().await;
    let root = env.add_admin("root@admin.test", Scope::All).await;
    let root = env.token(root).await;
    let tenant = env
        .add_admin("tenant@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let tenant = env.token(tenant).await;
    let (root, tenant) = (Some(root.as_str()), Some(tenant.as_str()));
    let path = "/api/v1/domains/a.test/oauth";

    let r = env.api(Method::GET, path, tenant, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "off at first");

    let body = json!({"issuer": "https://id.a.test", "jwks_url": "https://id.a.test/keys",
                      "audience": "pophost"});
    let r = env.api(Method::PUT, path, tenant, Some(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["claim"], "email");
    assert_eq!(r.json()["algorithms"], json!(["RS256", "ES256", "EdDSA"]));
    let stored = env
        .store
        .oauth_settings(&domain("a.test"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.jwks,
        JwksSource::Url("https://id.a.test/keys".into())
    );
    let r = env.api(Method::GET, path, tenant, None).await;
    assert_eq!(r.json()["issuer"], "https://id.a.test");

    // A tenant may not make the server read its disk or fetch plain http.
    let file = json!({"issuer": "i", "jwks_file": "/etc/shadow", "audience": "a"});
    let r = env.api(Method::PUT, path, tenant, Some(file.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let http = json!({"issuer": "i", "jwks_url": "http://10.0.0.1/keys", "audience": "a"});
    let r = env.api(Method::PUT, path, tenant, Some(http.clone())).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    // The command line's powers: a super admin may.
    let r = env.api(Method::PUT, path, root, Some(http)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    for bad in [
        json!({"issuer": "i", "jwks_url": "https://x/k", "audience": "a", "algorithms": ["none"]}),
        json!({"issuer": "i", "jwks_url": "https://x/k", "audience": "a", "algorithms": ["HS256"]}),
        json!({"issuer": "i", "jwks_url": "https://x/k", "audience": "a", "algorithms": []}),
        json!({"issuer": "", "jwks_url": "https://x/k", "audience": "a"}),
        json!({"issuer": "i", "audience": "a"}),
        json!({"issuer": "i", "jwks_url": "https://x/k", "jwks_file": "/k", "audience": "a"}),
        json!({"issuer": "i", "jwks_url": "ftp://x/k", "audience": "a"}),
    ] {
        let r = env.api(Method::PUT, path, root, Some(bad.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.body
        );
    }

    // Another tenant's domain does not exist for this admin.
    for method in [Method::GET, Method::DELETE] {
        let r = env
            .api(method.clone(), "/api/v1/domains/b.test/oauth", tenant, None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}");
    }

    let r = env.api(Method::DELETE, path, tenant, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(!env.store.oauth_anywhere().await.unwrap());
    let r = env.api(Method::DELETE, path, tenant, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let actions = env.audit_actions().await;
    let oauth: Vec<&str> = actions
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("domain.oauth"))
        .collect();
    assert_eq!(
        oauth,
        ["domain.oauth.set", "domain.oauth.set", "domain.oauth.clear"]
    );
}

/// The domain page's form: a domain admin sets an https key URL and turns OAuth off; a key
/// file is refused them (403); a bad algorithm shows on the form.
#[tokio::test]
async fn the_oauth_page_sets_and_clears_the_settings() {
    let env = Env::with_domains().await;
    let b = env.domain_admin().await;
    let page = env.get(&b, "/domains/a.test").await;
    assert!(
        page.body.contains("/domains/a.test/oauth"),
        "linked from the domain page"
    );
    let fields = [
        ("issuer", "https://id.a.test"),
        ("jwks", "https://id.a.test/keys"),
        ("audience", "mail"),
        ("claim", ""),
        ("algorithms", "ES256"),
    ];
    let r = env.post(&b, "/domains/a.test/oauth", &fields).await;
    r.assert_redirect("/domains/a.test/oauth");
    let stored = env
        .store
        .oauth_settings(&domain("a.test"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.claim, "email");
    assert_eq!(stored.algorithms, [mailstore::JwtAlgorithm::Es256]);
    let page = env.get(&b, "/domains/a.test/oauth").await;
    assert!(
        page.body.contains("https://id.a.test/keys"),
        "{}",
        page.body
    );

    let mut file = fields;
    file[1] = ("jwks", "/etc/jwks.json");
    let r = env.post(&b, "/domains/a.test/oauth", &file).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut none = fields;
    none[4] = ("algorithms", "none");
    let r = env.post(&b, "/domains/a.test/oauth", &none).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        crate::support::field_error(&r.body, "oauth").is_some(),
        "{}",
        r.body
    );

    let r = env.post(&b, "/domains/a.test/oauth/clear", &[]).await;
    r.assert_redirect("/domains/a.test/oauth");
    assert!(!env.store.oauth_anywhere().await.unwrap());
}

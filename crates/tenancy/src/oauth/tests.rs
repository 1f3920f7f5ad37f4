use std::io::{BufRead as _, BufReader, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mailstore::{Admin, Directory, DomainName, LockOptions, SqliteStore};
use serde_json::json;

use super::testing::{self, TestKey};
use super::*;
use crate::{AuthPolicy, DefaultDomains, hash_password};

const ISS: &str = "https://id.example.com";
const AUD: &str = "pophost";

fn config(algorithms: &[JwtAlgorithm]) -> OAuthConfig {
    OAuthConfig {
        issuer: ISS.into(),
        jwks: JwksSource::File("unused".into()),
        audience: AUD.into(),
        claim: "email".into(),
        algorithms: algorithms.to_vec(),
    }
}

fn keyset(keys: &[&TestKey]) -> KeySet {
    KeySet::parse(testing::jwks(keys).as_bytes()).expect("jwks")
}

#[test]
fn oauthbearer_and_xoauth2_messages() {
    let m = BearerMechanism::OAuthBearer
        .parse_message(&testing::oauthbearer("a,b=c@example.com", "tok.en.sig"))
        .expect("parsed");
    assert_eq!(
        (m.login.as_str(), m.token.as_str()),
        ("a,b=c@example.com", "tok.en.sig")
    );
    let m = BearerMechanism::XOAuth2
        .parse_message(&testing::xoauth2("john@example.com", "t.o.k"))
        .expect("parsed");
    assert_eq!(
        (m.login.as_str(), m.token.as_str()),
        ("john@example.com", "t.o.k")
    );
    // Thunderbird's form: no host/port pairs; scheme in another case.
    let m = BearerMechanism::OAuthBearer
        .parse_message(b"n,a=john@example.com,\x01auth=bearer abc\x01\x01")
        .expect("parsed");
    assert_eq!(m.token, "abc");
    let bad: &[(BearerMechanism, &[u8])] = &[
        (BearerMechanism::OAuthBearer, b""),
        // No authzid: nothing names the mailbox.
        (
            BearerMechanism::OAuthBearer,
            b"n,,\x01auth=Bearer abc\x01\x01",
        ),
        // Channel binding is not offered.
        (
            BearerMechanism::OAuthBearer,
            b"p=tls-unique,a=j@e.com,\x01auth=Bearer abc\x01\x01",
        ),
        (
            BearerMechanism::OAuthBearer,
            b"n,a=j=2Xe.com,\x01auth=Bearer abc\x01\x01",
        ),
        (
            BearerMechanism::OAuthBearer,
            b"n,a=j@e.com,\x01auth=Basic abc\x01\x01",
        ),
        (
            BearerMechanism::OAuthBearer,
            b"n,a=j@e.com,\x01host=x\x01\x01",
        ),
        (BearerMechanism::XOAuth2, b"auth=Bearer abc\x01\x01"),
        (
            BearerMechanism::XOAuth2,
            b"user=j@e.com\x01auth=Bearer \x01\x01",
        ),
        (BearerMechanism::XOAuth2, b"user=j@e.com\x01auth=Bearer abc"),
        (
            BearerMechanism::XOAuth2,
            b"user=j@e.com\x01auth=Bearer \xff\x01\x01",
        ),
    ];
    for (mech, message) in bad {
        assert_eq!(
            mech.parse_message(message),
            Err(BearerFailure::InvalidRequest),
            "{}",
            String::from_utf8_lossy(message)
        );
    }
}

#[test]
fn error_challenges_are_the_rfc_json() {
    let json = |m: BearerMechanism, f| {
        serde_json::from_slice::<serde_json::Value>(&m.error_challenge(f)).expect("json")
    };
    assert_eq!(
        json(BearerMechanism::OAuthBearer, BearerFailure::InvalidToken)["status"],
        "invalid_token"
    );
    assert_eq!(
        json(BearerMechanism::OAuthBearer, BearerFailure::InvalidRequest)["status"],
        "invalid_request"
    );
    assert_eq!(
        json(BearerMechanism::XOAuth2, BearerFailure::InvalidToken)["status"],
        "401"
    );
}

#[test]
fn good_tokens_of_each_algorithm_name_their_mailbox() {
    let keys = [TestKey::rsa("r1"), TestKey::ec("e1"), TestKey::ed("d1")];
    let set = keyset(&[&keys[0], &keys[1], &keys[2]]);
    let all = config(&JwtAlgorithm::ALL);
    for key in &keys {
        let token = key.sign(&testing::claims(ISS, AUD, "john@example.com"));
        assert_eq!(
            verify(&token, &all, &set),
            Ok("john@example.com".into()),
            "{:?}",
            key.alg
        );
    }
    // `aud` may be a list.
    let mut claims = testing::claims(ISS, AUD, "john@example.com");
    claims["aud"] = json!(["other", AUD]);
    assert!(verify(&keys[0].sign(&claims), &all, &set).is_ok());
    // A domain that allows only RS256 refuses the others, good as they are.
    let rs = config(&[JwtAlgorithm::Rs256]);
    let token = keys[2].sign(&testing::claims(ISS, AUD, "john@example.com"));
    assert_eq!(verify(&token, &rs, &set), Err(TokenError::Algorithm));
}

#[test]
fn bad_tokens_are_refused_for_their_reason() {
    let key = TestKey::rsa("k1");
    let other = TestKey::rsa("k1");
    let set = keyset(&[&key]);
    let config = config(&JwtAlgorithm::ALL);
    let good = testing::claims(ISS, AUD, "john@example.com");
    let with = |field: &str, value: serde_json::Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let now = testing::now();
    let cases: Vec<(&str, String, TokenError)> = vec![
        (
            "expired",
            key.sign(&with("exp", json!(now - 120))),
            TokenError::Expired,
        ),
        (
            "not yet valid",
            key.sign(&with("nbf", json!(now + 600))),
            TokenError::NotYetValid,
        ),
        (
            "wrong audience",
            key.sign(&with("aud", json!("someone-else"))),
            TokenError::Audience,
        ),
        (
            "wrong issuer",
            key.sign(&with("iss", json!("https://evil.example"))),
            TokenError::Issuer,
        ),
        (
            "unknown kid",
            TestKey::ec("nope").sign(&good),
            TokenError::UnknownKey,
        ),
        ("bad signature", other.sign(&good), TokenError::Signature),
        ("alg none", testing::unsigned(&good), TokenError::Algorithm),
        (
            "HS256 keyed with the public key",
            testing::hmac(&good, "k1", testing::jwks(&[&key]).as_bytes()),
            TokenError::Algorithm,
        ),
        (
            "HS256 keyed with the modulus",
            testing::hmac(&good, "k1", key.jwk["n"].as_str().unwrap_or("").as_bytes()),
            TokenError::Algorithm,
        ),
        (
            "no mailbox claim",
            key.sign(&json!({"iss": ISS, "aud": AUD, "exp": now + 60})),
            TokenError::Mailbox,
        ),
        (
            "no exp",
            key.sign(&json!({"iss": ISS, "aud": AUD, "email": "j@example.com"})),
            TokenError::Malformed,
        ),
        ("garbage", "not a token".into(), TokenError::Malformed),
    ];
    for (what, token, expected) in cases {
        assert_eq!(verify(&token, &config, &set), Err(expected), "{what}");
    }
    // Within the leeway, a just-expired token still counts (clock skew).
    assert!(verify(&key.sign(&with("exp", json!(now - 10))), &config, &set).is_ok());
}

/// A JWKS with a symmetric key: never used, so a token HMAC'd with it cannot pass.
#[test]
fn symmetric_keys_in_a_jwks_are_dropped() {
    let set = KeySet::parse(br#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#).expect("jwks");
    assert!(set.is_empty());
    let token = testing::hmac(&testing::claims(ISS, AUD, "j@example.com"), "h", b"secret");
    assert_eq!(
        verify(&token, &config(&JwtAlgorithm::ALL), &set),
        Err(TokenError::Algorithm)
    );
}

#[test]
fn cache_control_max_age() {
    assert_eq!(
        max_age("public, max-age=600"),
        Some(Duration::from_secs(600))
    );
    assert_eq!(max_age("no-cache"), Some(Duration::ZERO));
    assert_eq!(max_age("public"), None);
}

/// A JWKS server on loopback answering every GET with `body()` and `Cache-Control`; counts
/// requests.
fn serve_jwks(
    body: Arc<std::sync::Mutex<String>>,
    cache: &'static str,
) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let body = body.lock().expect("body").clone();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: {cache}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, hits)
}

/// Fetched once and kept; a new `kid` (key rotation) fetches again, but made-up `kid`s do not
/// fetch more than once per `REFETCH_EVERY`.
#[tokio::test]
async fn a_fetched_jwks_is_cached_and_refetched_for_a_new_kid_at_most_so_often() {
    let old = TestKey::ec("old");
    let body = Arc::new(std::sync::Mutex::new(testing::jwks(&[&old])));
    let (url, hits) = serve_jwks(body.clone(), "public, max-age=3600");
    let jwks = Jwks::new().expect("client");
    let source = JwksSource::Url(url);
    for _ in 0..3 {
        assert!(
            jwks.keys(&source, Some("old"))
                .await
                .expect("keys")
                .has(Some("old"))
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "cached for its max-age");
    let new = TestKey::ec("new");
    *body.lock().expect("body") = testing::jwks(&[&old, &new]);
    // Within REFETCH_EVERY of the fetch: an unknown kid does not fetch.
    assert!(
        !jwks
            .keys(&source, Some("new"))
            .await
            .expect("keys")
            .has(Some("new"))
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Pretend the fetch was long ago.
    let slots: Vec<_> = jwks.cache.lock().unwrap().values().cloned().collect();
    for slot in slots {
        let mut slot = slot.lock().await;
        slot.tried = slot.tried.map(|t| t - REFETCH_EVERY);
    }
    assert!(
        jwks.keys(&source, Some("new"))
            .await
            .expect("keys")
            .has(Some("new"))
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2, "a rotated key is fetched");
    assert!(
        !jwks
            .keys(&source, Some("made-up"))
            .await
            .expect("keys")
            .has(Some("made-up"))
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "made-up kids fetch nothing more"
    );
}

async fn authenticator() -> (tempfile::TempDir, Arc<SqliteStore>, Authenticator, TestKey) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("db"), LockOptions::default(), true)
            .await
            .expect("store"),
    );
    let domain = DomainName::parse("example.com").expect("domain");
    store.add_domain(&domain).await.expect("domain");
    store
        .add_alias(&DomainName::parse("example.net").expect("alias"), &domain)
        .await
        .expect("alias");
    for who in ["john@example.com", "mary@example.com"] {
        let address = mailstore::Address::parse(who).expect("address");
        store
            .add_user(&address, &hash_password(b"pw").expect("hash"), None)
            .await
            .expect("user");
    }
    let key = TestKey::ed("k1");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, testing::jwks(&[&key])).expect("jwks file");
    let settings = OAuthConfig {
        jwks: JwksSource::File(file.to_string_lossy().into_owned()),
        ..config(&JwtAlgorithm::ALL)
    };
    store
        .set_oauth_settings(&domain, &settings)
        .await
        .expect("settings");
    let policy = AuthPolicy {
        failure_delay: Duration::ZERO,
        ..AuthPolicy::default()
    };
    let auth = Authenticator::new(store.clone(), 1, DefaultDomains::default(), policy)
        .expect("auth")
        .with_oauth(OAuth::new(store.clone()).expect("oauth"));
    (dir, store, auth, key)
}

/// The login names the mailbox, the token's claim must name the same one (through an alias
/// too); a token for another user, or a login of a domain without OAuth, is refused.
#[tokio::test]
async fn the_claim_must_name_the_mailbox_the_login_names() {
    let (_dir, store, auth, key) = authenticator().await;
    let ctx = LoginContext {
        mechanism: Some("XOAUTH2"),
        peer_ip: Some("192.0.2.9".parse().expect("ip")),
        ..LoginContext::default()
    };
    assert!(auth.oauth_offered().await);
    let john = key.sign(&testing::claims(ISS, AUD, "John@example.net"));
    let login = |login: &str, token: &str| BearerMessage {
        login: login.into(),
        token: token.into(),
    };
    for name in ["john@example.com", "john@example.net"] {
        let who = auth
            .authenticate_bearer(&login(name, &john), &ctx)
            .await
            .expect("logged in");
        assert_eq!(who.address.to_string(), "john@example.com");
    }
    let refused = auth
        .authenticate_bearer(&login("mary@example.com", &john), &ctx)
        .await;
    assert!(matches!(
        refused,
        Err(BearerError::Rejected(BearerFailure::InvalidToken))
    ));
    let history = store
        .user_activity(&mailstore::Address::parse("mary@example.com").expect("a"))
        .await
        .expect("activity")
        .expect("mary");
    assert_eq!(
        history
            .logins
            .first()
            .and_then(|l| l.failure.as_ref())
            .map(|f| f.as_str()),
        Some("bad_token"),
        "the failure is in mary's login history"
    );
    store
        .clear_oauth_settings(&DomainName::parse("example.com").expect("d"))
        .await
        .expect("clear");
    assert!(!auth.oauth_offered().await);
    let refused = auth
        .authenticate_bearer(&login("john@example.com", &john), &ctx)
        .await;
    assert!(matches!(
        refused,
        Err(BearerError::Rejected(BearerFailure::InvalidToken))
    ));
    let _ = store
        .find_user(&mailstore::Address::parse("john@example.com").expect("a"))
        .await;
}

/// A provider that answers garbage (or is down) is asked again at most once per
/// `REFETCH_EVERY`, not at every login.
#[tokio::test]
async fn a_failing_jwks_url_is_not_fetched_at_every_login() {
    let body = Arc::new(std::sync::Mutex::new("not json".to_string()));
    let (url, hits) = serve_jwks(body, "max-age=600");
    let jwks = Jwks::new().expect("client");
    let source = JwksSource::Url(url);
    for _ in 0..3 {
        assert!(matches!(
            jwks.keys(&source, Some("k")).await,
            Err(TokenError::Keys(_))
        ));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

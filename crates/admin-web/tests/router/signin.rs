//! The sign-in form under attack: throttling per (client network, account) and per network
//! (IPv6 by /64), the client's address taken from a proxy's headers only when the proxy is
//! trusted, the public origin of a proxied UI, and an audit log a flood cannot fill.
//! Requests carry the `ConnectInfo` a real listener would give them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use admin_web::{ClientAddr, PublicOrigin, WebConfig};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use mailstore::{Admin, AuditEntry, Scope};

use crate::support::{Env, Reply, now};

/// The double-submit token the tests' "browser" echoes.
const PRE: &str = "pre-token-of-this-browser";
/// The password `Env::add_admin` gives every admin.
const RIGHT: &str = "admin password";

/// Posts the sign-in form as a connection from `peer` would, with extra `headers`.
async fn attempt(
    env: &Env,
    peer: &str,
    headers: &[(&str, &str)],
    email: &str,
    password: &str,
) -> Reply {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("email", email)
        .append_pair("password", password)
        .append_pair("_pre", PRE)
        .finish();
    let mut req = Request::post("/signin")
        .header(header::COOKIE, format!("__Host-pophost-pre={PRE}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::from(body)).expect("request");
    let peer = SocketAddr::new(peer.parse().expect("peer address"), 50_000);
    req.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
    env.send(req).await
}

fn xff(v: &str) -> [(&'static str, &str); 1] {
    [("x-forwarded-for", v)]
}

async fn audit(env: &Env) -> Vec<AuditEntry> {
    env.store
        .audit_page(&Scope::All, &Default::default(), 0, 10_000)
        .await
        .expect("audit page")
        .items
}

fn failed_signins(entries: &[AuditEntry]) -> usize {
    entries
        .iter()
        .filter(|e| e.action == "signin" && !e.success)
        .count()
}

#[tokio::test]
async fn an_address_failing_many_accounts_is_refused_and_ipv6_counts_by_64() {
    let env = Env::new().await;
    env.add_admin("a@admin.test", Scope::All).await;
    env.add_admin("b@admin.test", Scope::All).await;
    // A spray: four wrong passwords (under the per-account limit) for each of five accounts,
    // from addresses of one IPv6 /64.
    for (i, account) in ["a", "x1", "x2", "x3", "x4"].iter().enumerate() {
        for j in 0..4 {
            let peer = format!("2001:db8:1:2::{:x}", i * 16 + j + 1);
            let email = format!("{account}@admin.test");
            let r = attempt(&env, &peer, &[], &email, "wrong").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{peer} {email}");
        }
    }
    // The /64 has failed 20 times: the right password of an account it never tried is refused
    // from a new address in it, and accepted from the next /64.
    let r = attempt(&env, "2001:db8:1:2::ffff", &[], "b@admin.test", RIGHT).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = attempt(&env, "2001:db8:1:3::1", &[], "b@admin.test", RIGHT).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let r = attempt(&env, "2001:db8:1:3::1", &[], "a@admin.test", RIGHT).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

#[tokio::test]
async fn only_a_trusted_proxy_names_the_client() {
    let config = WebConfig {
        trusted_proxies: vec!["10.0.0.0/8".parse().expect("network")],
        ..WebConfig::default()
    };
    let env = Env::with(config, admin_web::system_clock()).await;
    env.add_admin("a@admin.test", Scope::All).await;
    // From our proxy: the right-most address it did not add itself.
    attempt(
        &env,
        "10.0.0.1",
        &xff("203.0.113.5, 192.0.2.1, 10.0.0.2"),
        "a@admin.test",
        "wrong",
    )
    .await;
    attempt(
        &env,
        "10.0.0.1",
        &[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")],
        "a@admin.test",
        "wrong",
    )
    .await;
    // From anyone else the header is the client's own word, and ignored.
    attempt(
        &env,
        "198.51.100.7",
        &xff("192.0.2.1"),
        "a@admin.test",
        "wrong",
    )
    .await;
    let ips: Vec<Option<String>> = audit(&env).await.into_iter().rev().map(|e| e.ip).collect();
    assert_eq!(
        ips,
        [
            Some("192.0.2.1".to_string()),
            Some("2001:db8::7".to_string()),
            Some("198.51.100.7".to_string())
        ]
    );
    // An untrusted client that makes up a new address for every guess is still one address.
    for i in 0..4 {
        let fake = format!("192.0.2.{}", 100 + i);
        let r = attempt(&env, "198.51.100.7", &xff(&fake), "a@admin.test", "wrong").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let r = attempt(
        &env,
        "198.51.100.7",
        &xff("192.0.2.200"),
        "a@admin.test",
        RIGHT,
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Through the proxy, the client the failures came from is not the one signing in now.
    let r = attempt(&env, "10.0.0.1", &xff("192.0.2.50"), "a@admin.test", RIGHT).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

#[tokio::test]
async fn the_public_url_is_an_accepted_origin() {
    let config = WebConfig {
        public_origin: Some(PublicOrigin::parse("https://admin.isp.example/").expect("url")),
        ..WebConfig::default()
    };
    let env = Env::with(config, admin_web::system_clock()).await;
    env.add_admin("a@admin.test", Scope::All).await;
    let b = env.super_admin().await;
    // What a browser sends through an HTTPS proxy that passes the upstream's Host on.
    let post = |origin: &'static str, site: &'static str| {
        let body = format!("name=shop.example&_csrf={}", b.csrf);
        let req = Request::post("/domains")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::COOKIE, &b.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, origin)
            .header("sec-fetch-site", site)
            .body(Body::from(body))
            .expect("request");
        env.send(req)
    };
    assert_eq!(
        post("https://evil.example", "cross-site").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post("http://admin.isp.example", "same-origin").await.status,
        StatusCode::FORBIDDEN,
        "the scheme is part of the origin"
    );
    post("https://admin.isp.example", "same-origin")
        .await
        .assert_redirect("/domains/shop.example");
    let signin = [
        (header::HOST.as_str(), "127.0.0.1:8080"),
        (header::ORIGIN.as_str(), "https://admin.isp.example"),
    ];
    let r = attempt(&env, "127.0.0.1", &signin, "a@admin.test", RIGHT).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

#[tokio::test]
async fn a_flood_of_failed_sign_ins_writes_a_bounded_audit_log() {
    let clock = Arc::new(AtomicI64::new(now()));
    let c = clock.clone();
    let env = Env::with(
        WebConfig::default(),
        Arc::new(move || c.load(Ordering::SeqCst)),
    )
    .await;
    env.add_admin("a@admin.test", Scope::All).await;
    env.add_admin("b@admin.test", Scope::All).await;
    // One address: 30 attempts (refused with 429 after five), of which ten are written.
    for _ in 0..30 {
        attempt(&env, "192.0.2.1", &[], "a@admin.test", "wrong").await;
    }
    assert_eq!(failed_signins(&audit(&env).await), 10);
    // Eleven more addresses, ten each: the log takes 100 failures a minute in all.
    for host in 2..=12 {
        for _ in 0..10 {
            let peer = format!("192.0.2.{host}");
            attempt(&env, &peer, &[], "a@admin.test", "wrong").await;
        }
    }
    assert_eq!(failed_signins(&audit(&env).await), 100);
    // A success is always written.
    let r = attempt(&env, "192.0.2.99", &[], "b@admin.test", RIGHT).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let entries = audit(&env).await;
    assert!(entries[0].action == "signin" && entries[0].success);
    // The next minute's first attempt writes how many the last one left out, then itself.
    clock.fetch_add(61_000, Ordering::SeqCst);
    attempt(&env, "192.0.2.1", &[], "a@admin.test", "wrong").await;
    let entries = audit(&env).await;
    assert_eq!(failed_signins(&entries), 101);
    let summary = entries
        .iter()
        .find(|e| e.action == "signin.suppressed")
        .expect("a summary row");
    assert_eq!(
        summary.after.as_deref(),
        Some(r#"{"failed_signins_not_recorded":40}"#)
    );
}

#[tokio::test]
async fn the_actor_an_attacker_types_is_cut_to_an_address_length() {
    let env = Env::new().await;
    let typed = format!("{}\r\nfake line@x.test", "é".repeat(300));
    attempt(&env, "192.0.2.1", &[], &typed, "wrong").await;
    let entries = audit(&env).await;
    let actor = &entries[0].actor;
    assert!(actor.len() <= 254, "{} bytes", actor.len());
    assert_eq!(actor.as_str(), "é".repeat(127));
    attempt(&env, "192.0.2.1", &[], "ab\r\ncd@x.test", "wrong").await;
    assert_eq!(audit(&env).await[0].actor, "ab\u{fffd}\u{fffd}cd@x.test");
}

/// Guesses sent at once see each other: each is counted before its password is checked, so of
/// 20 wrong passwords for one admin from one address only the first `signin_failures` (5) are
/// checked at all; the rest get 429, as they would one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_sent_at_once_are_limited_like_guesses_in_a_row() {
    let env = Arc::new(Env::new().await);
    env.add_admin("a@admin.test", Scope::All).await;
    let mut guesses = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let env = env.clone();
        guesses.spawn(async move {
            attempt(&env, "192.0.2.7", &[], "a@admin.test", "wrong")
                .await
                .status
        });
    }
    let statuses = guesses.join_all().await;
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, refused), (5, 15), "{statuses:?}");
    // Another address is not affected.
    let r = attempt(&env, "192.0.2.8", &[], "a@admin.test", RIGHT).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

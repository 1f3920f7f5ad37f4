//! The routes every page stands on: session expiry (with a clock the test moves), the CSRF and
//! `Origin` checks on every POST, security headers and safe error pages, API tokens, the audit
//! log's scope and filter, and the dashboard's counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use admin_web::auth::{SESSION_COOKIE, hash_secret, random_token};
use admin_web::{AppState, WebConfig};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use mailstore::{Admin, Directory, Scope};

use crate::support::{Browser, Env, domain, now};

/// An app whose clock the test sets, with a 10-minute idle and 1-hour absolute session limit.
async fn timed() -> (Env, Arc<AtomicI64>) {
    let mut env = Env::new().await;
    let clock = Arc::new(AtomicI64::new(now()));
    let c = clock.clone();
    let config = WebConfig {
        session_idle: Duration::from_secs(600),
        session_absolute: Duration::from_secs(3600),
        ..WebConfig::default()
    };
    let state = AppState::new(
        admin_web::Roles::of(env.store.clone()),
        config,
        Arc::new(move || c.load(Ordering::SeqCst)),
    );
    env.app = admin_web::app(state);
    (env, clock)
}

async fn session_at(env: &Env, at: i64) -> Browser {
    let id = env.add_admin("root@ops.example", Scope::All).await;
    let cookie = random_token();
    let csrf = random_token();
    env.store
        .create_admin_session(&hash_secret(&cookie), id, &csrf, at)
        .await
        .expect("session");
    Browser {
        cookie: format!("{SESSION_COOKIE}={cookie}"),
        csrf,
    }
}

#[tokio::test]
async fn an_idle_session_ends_and_use_keeps_it_alive() {
    let (env, clock) = timed().await;
    let b = session_at(&env, clock.load(Ordering::SeqCst)).await;
    let minute = 60_000;
    for _ in 0..5 {
        clock.fetch_add(9 * minute, Ordering::SeqCst);
        assert_eq!(
            env.get(&b, "/").await.status,
            StatusCode::OK,
            "used within 10 minutes"
        );
    }
    clock.fetch_add(11 * minute, Ordering::SeqCst);
    env.get(&b, "/").await.assert_redirect("/signin");
    clock.fetch_sub(11 * minute, Ordering::SeqCst);
    env.get(&b, "/").await.assert_redirect("/signin");
}

#[tokio::test]
async fn a_session_ends_an_hour_after_sign_in_however_busy() {
    let (env, clock) = timed().await;
    let b = session_at(&env, clock.load(Ordering::SeqCst)).await;
    for _ in 0..6 {
        clock.fetch_add(9 * 60_000, Ordering::SeqCst);
        assert_eq!(env.get(&b, "/").await.status, StatusCode::OK);
    }
    clock.fetch_add(9 * 60_000, Ordering::SeqCst);
    env.get(&b, "/").await.assert_redirect("/signin");
}

async fn raw_post(
    env: &Env,
    b: &Browser,
    path: &str,
    body: &str,
    origin: Option<&str>,
) -> StatusCode {
    raw_post_from(env, b, path, body, origin, None).await
}

async fn raw_post_from(
    env: &Env,
    b: &Browser,
    path: &str,
    body: &str,
    origin: Option<&str>,
    site: Option<&str>,
) -> StatusCode {
    let mut req = Request::post(path)
        .header(header::HOST, "admin.example:8080")
        .header(header::COOKIE, &b.cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    if let Some(s) = site {
        req = req.header("sec-fetch-site", s);
    }
    env.send(req.body(Body::from(body.to_string())).expect("request"))
        .await
        .status
}

#[tokio::test]
async fn every_post_needs_the_csrf_token_and_our_origin() {
    let env = Env::new().await;
    let b = env.super_admin().await;
    let good = format!("name=shop.example&_csrf={}", b.csrf);
    for (body, origin) in [
        ("name=shop.example".to_string(), None),
        ("name=shop.example&_csrf=wrong".to_string(), None),
        (format!("name=shop.example&_csrf={}x", b.csrf), None),
        (good.clone(), Some("http://evil.example")),
        (good.clone(), Some("null")),
        (good.clone(), Some("https://admin.example:8080")),
    ] {
        assert_eq!(
            raw_post(&env, &b, "/domains", &body, origin).await,
            StatusCode::FORBIDDEN,
            "{body} from {origin:?}"
        );
    }
    // What Chromium sends for a cross-site form, and for its own form under `no-referrer`.
    for (origin, site) in [
        (Some("http://evil.example"), "cross-site"),
        (Some("null"), "cross-site"),
        (None, "same-site"),
    ] {
        assert_eq!(
            raw_post_from(&env, &b, "/domains", &good, origin, Some(site)).await,
            StatusCode::FORBIDDEN,
            "{origin:?} {site}"
        );
    }
    assert!(
        env.store
            .domain_detail(&domain("shop.example"))
            .await
            .expect("detail")
            .is_none()
    );
    // Sign-out is a state change too.
    assert_eq!(
        raw_post(&env, &b, "/signout", "", None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        raw_post_from(
            &env,
            &b,
            "/domains",
            &good,
            Some("null"),
            Some("same-origin")
        )
        .await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        raw_post(
            &env,
            &b,
            "/domains",
            &good.replace("shop", "shop2"),
            Some("http://admin.example:8080")
        )
        .await,
        StatusCode::SEE_OTHER
    );
    assert!(
        env.store
            .domain_detail(&domain("shop.example"))
            .await
            .expect("detail")
            .is_some()
    );
}

#[tokio::test]
async fn pages_carry_security_headers_and_errors_show_no_internals() {
    let env = Env::new().await;
    let b = env.super_admin().await;
    for path in [
        "/",
        "/domains",
        "/signin",
        "/nope",
        "/domains/nosuch.example",
        "/healthz",
    ] {
        let r = env.get(&b, path).await;
        let h = |n| {
            r.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert!(
            h("content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
    }
    let missing = env.get(&b, "/domains/nosuch.example").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let weird = env.get(&b, "/domains/%00%27%3B--/users").await;
    assert_eq!(weird.status, StatusCode::NOT_FOUND);
    for r in [&missing, &weird] {
        for leak in ["sqlx", "SELECT", "panicked", "src/", "sqlite"] {
            assert!(
                !r.body.contains(leak),
                "error page shows {leak}: {}",
                r.body
            );
        }
    }
}

#[tokio::test]
async fn api_tokens_are_shown_once_work_and_are_revoked_by_their_owner_only() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    let page = env.post(&b, "/tokens", &[("name", "billing")]).await;
    assert_eq!(page.status, StatusCode::OK);
    let start = page.body.find("id=\"new-token\">").expect("token shown") + 15;
    let token = &page.body[start..start + page.body[start..].find('<').expect("end")];
    assert!(token.starts_with("ph_"));
    let listed = env
        .api(
            axum::http::Method::GET,
            "/api/v1/domains",
            Some(token),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(
        !env.get(&b, "/tokens").await.body.contains(token),
        "shown once"
    );
    assert_eq!(
        env.post(&b, "/tokens", &[("name", "")]).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let other_id = env
        .add_admin("tenant@ops.example", Scope::Domains(vec![domain("a.test")]))
        .await;
    let other = env.sign_in(other_id).await;
    let tokens = env
        .store
        .list_api_tokens(mailstore::AdminId(1))
        .await
        .expect("tokens");
    let id = tokens[0].id;
    assert_eq!(
        env.post(&other, &format!("/tokens/{id}/revoke"), &[])
            .await
            .status,
        StatusCode::NOT_FOUND,
        "another admin's token"
    );
    env.post(&b, &format!("/tokens/{id}/revoke"), &[])
        .await
        .assert_redirect("/tokens");
    let after = env
        .api(
            axum::http::Method::GET,
            "/api/v1/domains",
            Some(token),
            None,
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let actions = env.audit_actions().await;
    assert!(
        actions.contains(&"token.create".to_string())
            && actions.contains(&"token.revoke".to_string())
    );
}

#[tokio::test]
async fn the_audit_log_filters_and_a_domain_admin_sees_their_domain_only() {
    let env = Env::with_domains().await;
    let root = env.super_admin().await;
    env.post(
        &root,
        "/domains/a.test/users",
        &[("local", "anna"), ("password", "long enough")],
    )
    .await
    .assert_redirect("/domains/a.test/users/anna");
    env.post(
        &root,
        "/domains/b.test/users",
        &[("local", "bert"), ("password", "long enough")],
    )
    .await
    .assert_redirect("/domains/b.test/users/bert");
    let all = env.get(&root, "/audit").await.body;
    assert!(all.contains("anna@a.test") && all.contains("bert@b.test"));
    let filtered = env.get(&root, "/audit?object=bert").await.body;
    assert!(filtered.contains("bert@b.test") && !filtered.contains("anna@a.test"));

    let tenant = env.domain_admin().await;
    let theirs = env.get(&tenant, "/audit").await.body;
    assert!(theirs.contains("anna@a.test"), "{theirs}");
    assert!(!theirs.contains("bert@b.test"));
    // The audit log is read-only: there is no route to change it.
    assert_eq!(
        env.post(&root, "/audit", &[]).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn the_dashboard_counts_what_the_admin_may_see() {
    let env = Env::with_domains().await;
    env.add_user("x@a.test").await;
    env.add_user("y@b.test").await;
    env.add_user("z@b.test").await;
    let root = env.get(&env.super_admin().await, "/").await.body;
    assert!(
        root.contains("id=\"stat-domains\">2<") && root.contains("id=\"stat-users\">3<"),
        "{root}"
    );
    assert!(root.contains("<svg class=\"chart\""));
    let tenant = env.get(&env.domain_admin().await, "/").await.body;
    assert!(tenant.contains("id=\"stat-domains\">1<") && tenant.contains("id=\"stat-users\">1<"));
    let _ = env.store.list_domains().await.expect("list");
}

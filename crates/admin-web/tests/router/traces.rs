//! Protocol traces on the user page and in the API: start, read, stop and download, in the
//! admin's scope only, audited.

use axum::http::{Method, StatusCode};
use mailstore::{Direction, NewTraceLine, Scope, TraceLine, Traces};
use serde_json::json;

use crate::support::{Env, addr, domain, now};

const TRACE: &str = "/api/v1/domains/a.test/users/john/trace";

#[tokio::test]
async fn the_api_starts_reads_and_stops_a_trace_in_scope() {
    let env = Env::with_domains().await;
    env.add_user("john@a.test").await;
    env.add_user("mary@b.test").await;
    let tenant = env
        .add_admin("tenant@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let token = env.token(tenant).await;

    for minutes in [0, 61] {
        let r = env
            .api(
                Method::POST,
                TRACE,
                Some(&token),
                Some(json!({ "minutes": minutes })),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    }
    let r = env.api(Method::GET, TRACE, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "no trace yet");

    let r = env
        .api(
            Method::POST,
            TRACE,
            Some(&token),
            Some(json!({ "minutes": 15 })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let started = r.json();
    assert_eq!(started["recording"], true);
    assert_eq!(started["started_by"], "tenant@admin.test");
    let until = started["until"].as_i64().expect("until");
    assert!((until - now() - 15 * 60_000).abs() < 60_000, "{started}");

    let info = env
        .store
        .user_trace(&addr("john@a.test"), now())
        .await
        .expect("read")
        .expect("trace")
        .0;
    env.store
        .append_trace_lines(
            &[NewTraceLine {
                trace: info.id,
                line: TraceLine {
                    session: "1.7".into(),
                    at: now(),
                    direction: Direction::Client,
                    text: "PASS <redacted>".into(),
                },
            }],
            &[],
        )
        .await
        .expect("append");
    let r = env.api(Method::GET, TRACE, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let trace = r.json();
    assert_eq!(trace["lines"][0]["text"], "PASS <redacted>");
    assert_eq!(trace["lines"][0]["direction"], "C");
    assert_eq!(trace["lines"][0]["session"], "1.7");

    // Another tenant's user looks absent.
    let other = "/api/v1/domains/b.test/users/mary/trace";
    for method in [Method::GET, Method::DELETE] {
        let r = env.api(method, other, Some(&token), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    let r = env
        .api(
            Method::POST,
            other,
            Some(&token),
            Some(json!({ "minutes": 5 })),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        env.store
            .user_trace(&addr("mary@b.test"), now())
            .await
            .expect("read")
            .is_none()
    );

    let r = env.api(Method::DELETE, TRACE, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = env.api(Method::DELETE, TRACE, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "already stopped");
    let r = env.api(Method::GET, TRACE, Some(&token), None).await;
    assert_eq!(r.json()["recording"], false, "stopped but readable");

    let actions = env.audit_actions().await;
    let traced: Vec<&str> = actions
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("user.trace."))
        .collect();
    assert_eq!(traced, ["user.trace.start", "user.trace.stop"]);
}

#[tokio::test]
async fn the_user_page_starts_shows_downloads_and_stops_a_trace() {
    let env = Env::with_domains().await;
    env.add_user("john@a.test").await;
    env.add_user("mary@b.test").await;
    let admin = env.domain_admin().await;
    let page = "/domains/a.test/users/john";

    let r = env.get(&admin, page).await;
    assert!(r.body.contains("id=\"trace-start-form\""), "{}", r.body);
    let r = env
        .post(&admin, &format!("{page}/trace/start"), &[("minutes", "20")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("{page}/trace"));
    let r = env.get(&admin, page).await;
    assert!(r.body.contains("id=\"trace-stop-form\""), "{}", r.body);
    assert!(r.body.contains("Recording this user"), "{}", r.body);

    let r = env.get(&admin, &format!("{page}/trace")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("id=\"trace-download\""), "{}", r.body);
    let r = env.get(&admin, &format!("{page}/trace/download")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[axum::http::header::CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/plain")
    );
    assert!(
        r.body
            .starts_with("# POP3 trace of john@a.test, started by tenant@admin.test"),
        "{}",
        r.body
    );

    // Out of scope: absent, and nothing started.
    let r = env
        .post(
            &admin,
            "/domains/b.test/users/mary/trace/start",
            &[("minutes", "5")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = env.get(&admin, "/domains/b.test/users/mary/trace").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = env.post(&admin, &format!("{page}/trace/stop"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = env.get(&admin, page).await;
    assert!(r.body.contains("id=\"trace-start-form\""), "{}", r.body);
    assert!(r.body.contains("Stopped; kept until"), "{}", r.body);

    let actions = env.audit_actions().await;
    for action in ["user.trace.start", "user.trace.download", "user.trace.stop"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

//! What a customer did, on the user page and in the API: last login, last delivery, retrieved
//! and deleted, the last logins with why failures failed; in the reader's scope only.

use axum::http::{Method, StatusCode};
use mailstore::{
    Admin, Delivery, Directory, FailedLogin, FailureReason, LoginRecord, Maildrops, Parcel,
    Policies, Recipient, Scope, SessionEnd, Transfer, UserId,
};

use serde_json::Value;

use crate::support::{Env, addr, domain};

fn login(ip: &str, mechanism: &str, tls: bool) -> LoginRecord {
    LoginRecord {
        ip: Some(ip.parse().expect("ip")),
        mechanism: mechanism.into(),
        tls,
    }
}

async fn id(env: &Env, address: &str) -> UserId {
    env.store
        .find_user(&addr(address))
        .await
        .expect("find")
        .expect("user")
        .id
}

/// john@a.test: a delivery, a session that retrieved and deleted one message, then a wrong
/// password, a login while disabled, one too soon (LOGIN-DELAY) and one while in use.
async fn johns_day(env: &Env) {
    env.add_user("john@a.test").await;
    let john = id(env, "john@a.test").await;
    let body = b"Subject: hi\r\n\r\nhello\r\n".to_vec();
    let size = body.len() as u64;
    let parcel = Parcel {
        blob: None,
        chunks: 0,
        tail: body,
        size,
        recipients: vec![Recipient {
            user: john,
            prefix: Vec::new(),
        }],
        dedup: None,
    };
    let outcome = env.store.deliver(parcel).await.expect("deliver");
    assert!(outcome.iter().all(Result::is_ok));

    let store = &env.store;
    let lease = store
        .lock_for_login(john, &login("192.0.2.10", "SCRAM-SHA-256", true))
        .await
        .expect("login");
    let message = store.list(john).await.expect("list")[0].clone();
    let one = Transfer {
        messages: 1,
        octets: message.size,
    };
    store
        .end_session(&lease, &SessionEnd::new(Some(&[message.id][..]), one))
        .await
        .expect("quit");
    let failed = |reason| FailedLogin {
        login: login("198.51.100.20", "USER", false),
        address: Some(addr("john@a.test")),
        domain: None,
        reason,
    };
    store
        .record_failed_login(&failed(FailureReason::WrongPassword))
        .await
        .expect("record");
    store
        .set_user_enabled(&addr("john@a.test"), false)
        .await
        .expect("disable");
    store
        .record_failed_login(&failed(FailureReason::WrongPassword))
        .await
        .expect("record");
    store
        .set_user_enabled(&addr("john@a.test"), true)
        .await
        .expect("enable");
    let d = domain("a.test");
    let mut policies = store.domain_policies(&d).await.expect("policies");
    policies.login_delay_secs = Some(600);
    store
        .set_domain_policies(&d, &policies)
        .await
        .expect("policies");
    assert!(
        store
            .lock_for_login(john, &login("192.0.2.10", "APOP", false))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_user_page_shows_what_the_customer_did() {
    let env = Env::with_domains().await;
    johns_day(&env).await;
    let page = env
        .get(&env.super_admin().await, "/domains/a.test/users/john")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let body = &page.body;
    for piece in [
        r#"<section id="activity" class="card">"#,
        r#"<span class="client">192.0.2.10</span>"#,
        r#"<span class="mechanism">SCRAM-SHA-256</span>"#,
        r#"<span class="tls">TLS</span>"#,
        r#"<span id="retrieved">1 message ("#,
        r#"<span id="deleted">1 message ("#,
        r#"<table id="logins">"#,
        "failed: wrong password",
        "failed: account disabled",
        "failed: LOGIN-DELAY",
    ] {
        assert!(body.contains(piece), "{piece} in {body}");
    }
    let delivery = body
        .split(r#"<p id="last-delivery">"#)
        .nth(1)
        .expect("last delivery");
    assert!(delivery.starts_with("Last delivery: 20"), "{delivery}");
    // Newest first: LOGIN-DELAY, disabled, wrong password, the success.
    let rows: Vec<&str> = body.split("<tr class=\"login-").skip(1).collect();
    assert_eq!(rows.len(), 4);
    assert!(rows[0].contains("LOGIN-DELAY"));
    assert!(rows[3].starts_with("ok\""), "{}", rows[3]);

    // A user without history says so, and the page still works.
    env.add_user("jane@a.test").await;
    let jane = env
        .get(&env.domain_admin().await, "/domains/a.test/users/jane")
        .await;
    assert_eq!(jane.status, StatusCode::OK);
    assert!(jane.body.contains(r#"<p id="no-logins" class="muted">"#));
    assert!(jane.body.contains("Last delivery: never."));
}

#[tokio::test]
async fn another_domains_admin_sees_no_activity() {
    let env = Env::with_domains().await;
    johns_day(&env).await;
    let other = env
        .add_admin("b@admin.test", Scope::Domains(vec![domain("b.test")]))
        .await;
    let page = env
        .get(&env.sign_in(other).await, "/domains/a.test/users/john")
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!page.body.contains("192.0.2.10"));
    let token = env.token(other).await;
    let api = env
        .api(
            Method::GET,
            "/api/v1/domains/a.test/users/john/activity",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert!(!api.body.contains("192.0.2.10"));
}

#[tokio::test]
async fn the_api_returns_the_activity() {
    let env = Env::with_domains().await;
    johns_day(&env).await;
    let root = env.add_admin("root@admin.test", Scope::All).await;
    let token = env.token(root).await;
    let reply = env
        .api(
            Method::GET,
            "/api/v1/domains/a.test/users/john/activity",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let json = reply.json();
    assert_eq!(json["address"], "john@a.test");
    assert_eq!(json["last_login"]["client"], "192.0.2.10");
    assert_eq!(json["last_login"]["mechanism"], "SCRAM-SHA-256");
    assert_eq!(json["last_login"]["tls"], true);
    assert!(json["last_delivery"].as_i64().is_some());
    assert_eq!(json["days"], 30);
    assert_eq!(json["retrieved_messages"], 1);
    assert_eq!(json["deleted_messages"], 1);
    let reasons: Vec<Value> = json["logins"]
        .as_array()
        .expect("logins")
        .iter()
        .map(|l| l["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec![
            Value::from("login_delay"),
            Value::from("disabled"),
            Value::from("wrong_password"),
            Value::Null,
        ]
    );
    let missing = env
        .api(
            Method::GET,
            "/api/v1/domains/a.test/users/nobody/activity",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

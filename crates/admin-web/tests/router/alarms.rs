//! Re-download alarms on the user page, the dashboard and in the API, in the reader's scope.
//! The alarms are raised as POP3 sessions raise them: through `Maildrops::end_session`.

use axum::http::{Method, StatusCode};
use mailstore::{
    Delivery, Directory, LoginRecord, Maildrops, MessageId, Parcel, Recipient, Scope, SessionEnd,
    Transfer, UserId,
};

use crate::support::{Env, addr, domain};

async fn id(env: &Env, address: &str) -> UserId {
    env.store
        .find_user(&addr(address))
        .await
        .expect("find")
        .expect("user")
        .id
}

/// One message delivered, then taken (RETR, DELE, QUIT) by a client at `ip`.
async fn delivered_and_taken(env: &Env, user: UserId, ip: &str) {
    let body = b"Subject: hi\r\n\r\nhello\r\n".to_vec();
    let size = body.len() as u64;
    let parcel = Parcel {
        blob: None,
        chunks: 0,
        tail: body,
        size,
        recipients: vec![Recipient {
            user,
            prefix: Vec::new(),
        }],
        dedup: None,
    };
    let outcome = env.store.deliver(parcel).await.expect("deliver");
    assert!(outcome.iter().all(Result::is_ok));
    let login = LoginRecord {
        ip: Some(ip.parse().expect("ip")),
        mechanism: "USER".into(),
        tls: false,
    };
    let lease = env.store.lock_for_login(user, &login).await.expect("login");
    let ids: Vec<MessageId> = env
        .store
        .list(user)
        .await
        .expect("list")
        .iter()
        .map(|m| m.id)
        .collect();
    let end = SessionEnd {
        update: Some(&ids),
        retrieved: Transfer {
            messages: ids.len() as u64,
            octets: size,
        },
        retrieved_ids: &ids,
        login: Some(&login),
    };
    env.store.end_session(&lease, &end).await.expect("quit");
}

/// john@a.test and joe@b.test each have a quick-delete alarm: two addresses taking mail as it
/// arrives.
async fn two_alarms() -> Env {
    let env = Env::with_domains().await;
    for address in ["john@a.test", "joe@b.test"] {
        env.add_user(address).await;
        let user = id(&env, address).await;
        delivered_and_taken(&env, user, "192.0.2.1").await;
        delivered_and_taken(&env, user, "192.0.2.2").await;
    }
    env
}

fn addresses(json: &serde_json::Value) -> Vec<String> {
    json.as_array()
        .expect("array")
        .iter()
        .map(|a| a["address"].as_str().expect("address").to_string())
        .collect()
}

#[tokio::test]
async fn the_api_lists_alarms_in_the_tokens_scope() {
    let env = two_alarms().await;
    let root = env.add_admin("root@admin.test", Scope::All).await;
    let root = env.token(root).await;
    let tenant = env
        .add_admin("tenant@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let tenant = env.token(tenant).await;

    let all = env
        .api(Method::GET, "/api/v1/alarms", Some(&root), None)
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(addresses(&all.json()), vec!["joe@b.test", "john@a.test"]);
    let first = &all.json()[0];
    assert_eq!(first["kind"], "quick_delete");
    assert_eq!(first["client"], "192.0.2.2");
    assert_eq!(first["previous_client"], "192.0.2.1");
    assert_eq!(first["count"], 1);

    let mine = env
        .api(Method::GET, "/api/v1/alarms", Some(&tenant), None)
        .await;
    assert_eq!(addresses(&mine.json()), vec!["john@a.test"]);
    let john = env
        .api(
            Method::GET,
            "/api/v1/domains/a.test/users/john/alarms",
            Some(&tenant),
            None,
        )
        .await;
    assert_eq!(john.status, StatusCode::OK, "{}", john.body);
    assert_eq!(addresses(&john.json()), vec!["john@a.test"]);
    // Another tenant's user, and a user that does not exist, look the same.
    for path in [
        "/api/v1/domains/b.test/users/joe/alarms",
        "/api/v1/domains/a.test/users/nobody/alarms",
    ] {
        let reply = env.api(Method::GET, path, Some(&tenant), None).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn the_user_page_and_dashboard_show_alarms_in_scope() {
    let env = two_alarms().await;
    let tenant = env.domain_admin().await;
    let page = env.get(&tenant, "/domains/a.test/users/john").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(r#"<section id="alarms""#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(
            "john@a.test deleted 1 message within 60 s of delivery from a second client \
             (192.0.2.2, USER)"
        ),
        "{}",
        page.body
    );
    let dashboard = env.get(&tenant, "/").await;
    assert!(dashboard.body.contains("john@a.test deleted 1 message"));
    assert!(!dashboard.body.contains("joe@b.test"), "{}", dashboard.body);

    let root = env.super_admin().await;
    let dashboard = env.get(&root, "/").await;
    for who in ["john@a.test deleted", "joe@b.test deleted"] {
        assert!(dashboard.body.contains(who), "{who}: {}", dashboard.body);
    }
    // A user without alarms shows no warning.
    env.add_user("jane@a.test").await;
    let page = env.get(&root, "/domains/a.test/users/jane").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page.body.contains(r#"id="alarms""#), "{}", page.body);
}

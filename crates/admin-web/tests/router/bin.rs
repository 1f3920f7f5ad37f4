//! The recycle bin in the admin UI and the API: the user page's count, the bin page with who
//! deleted what, restoring (selected, as new, by time range) and purging with a confirmation,
//! all audited and in the reader's scope only; and the domain's bin settings in its form and
//! JSON.

use axum::http::{Method, StatusCode};
use mailstore::{
    BinSettings, Delivery, Directory, LoginRecord, Maildrops, Parcel, Recipient, RecycleBin, Scope,
    SessionEnd, Transfer, UserId,
};
use serde_json::json;

use crate::support::{Env, addr, domain, field_error};

async fn id(env: &Env, address: &str) -> UserId {
    env.store
        .find_user(&addr(address))
        .await
        .expect("find")
        .expect("user")
        .id
}

/// `address` gets `n` messages and deletes them all in one POP3 session from 192.0.2.10.
pub(crate) async fn deliver_and_delete(env: &Env, address: &str, n: usize) {
    env.add_user(address).await;
    let user = id(env, address).await;
    for i in 0..n {
        let body = format!("Subject: m{i}\r\n\r\nhello {i}\r\n").into_bytes();
        let parcel = Parcel {
            blob: None,
            chunks: 0,
            size: body.len() as u64,
            tail: body,
            recipients: vec![Recipient {
                user,
                prefix: Vec::new(),
            }],
            dedup: None,
        };
        let outcome = env.store.deliver(parcel).await.expect("deliver");
        assert!(outcome.iter().all(Result::is_ok));
    }
    let login = LoginRecord {
        ip: Some("192.0.2.10".parse().expect("ip")),
        mechanism: "SCRAM-SHA-256".into(),
        tls: true,
    };
    let lease = env.store.lock_for_login(user, &login).await.expect("login");
    let ids: Vec<_> = env
        .store
        .list(user)
        .await
        .expect("list")
        .iter()
        .map(|m| m.id)
        .collect();
    let end = SessionEnd {
        login: Some(&login),
        ..SessionEnd::new(Some(&ids), Transfer::default())
    };
    env.store.end_session(&lease, &end).await.expect("quit");
}

pub(crate) async fn bin_ids(env: &Env, address: &str) -> Vec<i64> {
    env.store
        .bin_page(&addr(address), 0, 100)
        .await
        .expect("bin")
        .items
        .iter()
        .map(|m| m.id)
        .collect()
}

#[tokio::test]
async fn the_help_desk_sees_who_deleted_and_restores_in_scope() {
    let env = Env::with_domains().await;
    deliver_and_delete(&env, "john@a.test", 2).await;
    deliver_and_delete(&env, "eve@b.test", 1).await;
    let b = env.domain_admin().await;

    let page = env.get(&b, "/domains/a.test/users/john").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(r#"<span id="bin-count">2</span>"#),
        "{}",
        page.body
    );
    let page = env.get(&b, "/domains/a.test/users/john/bin").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("from 192.0.2.10 (SCRAM-SHA-256, TLS)"),
        "{}",
        page.body
    );

    // Another tenant's bin does not exist for this admin, in the UI or the API.
    assert_eq!(
        env.get(&b, "/domains/b.test/users/eve/bin").await.status,
        StatusCode::NOT_FOUND
    );
    let eve = bin_ids(&env, "eve@b.test").await;
    let r = env
        .post(
            &b,
            "/domains/b.test/users/eve/bin/restore",
            &[("mode", "all")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        env.post(&b, "/domains/b.test/users/eve/bin/purge", &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(bin_ids(&env, "eve@b.test").await, eve, "untouched");

    // Restore one as new.
    let ids = bin_ids(&env, "john@a.test").await;
    let r = env
        .post(
            &b,
            "/domains/a.test/users/john/bin/restore",
            &[
                ("mode", "selected"),
                ("selected", &ids[0].to_string()),
                ("as_new", "on"),
            ],
        )
        .await;
    r.assert_redirect("/domains/a.test/users/john/bin");
    let shown = env.follow(&b, &r).await;
    assert!(
        shown
            .body
            .contains("1 message(s) restored, 1 with a new UIDL"),
        "{}",
        shown.body
    );
    let john = id(&env, "john@a.test").await;
    assert_eq!(env.store.list(john).await.expect("list").len(), 1);
    assert_eq!(bin_ids(&env, "john@a.test").await, vec![ids[1]]);

    // A time range typed wrong restores nothing.
    let r = env
        .post(
            &b,
            "/domains/a.test/users/john/bin/restore",
            &[("mode", "range"), ("from", "yesterday"), ("to", "today")],
        )
        .await;
    r.assert_redirect("/domains/a.test/users/john/bin");
    assert!(env.follow(&b, &r).await.body.contains("is not a time"));
    assert_eq!(bin_ids(&env, "john@a.test").await, vec![ids[1]]);
    // One that takes in the deletion restores it, with its UIDL.
    let r = env
        .post(
            &b,
            "/domains/a.test/users/john/bin/restore",
            &[
                ("mode", "range"),
                ("from", "2000-01-01T00:00"),
                ("to", "2999-01-01T00:00"),
            ],
        )
        .await;
    r.assert_redirect("/domains/a.test/users/john/bin");
    assert!(bin_ids(&env, "john@a.test").await.is_empty());
    assert_eq!(env.store.list(john).await.expect("list").len(), 2);

    let actions = env.audit_actions().await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.as_str() == "user.bin.restore")
            .count(),
        2,
        "{actions:?}"
    );
}

#[tokio::test]
async fn purging_asks_first_and_is_audited() {
    let env = Env::with_domains().await;
    deliver_and_delete(&env, "john@a.test", 2).await;
    let b = env.super_admin().await;
    let confirm = env.get(&b, "/domains/a.test/users/john/bin/purge").await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm.body.contains("Delete the 2 message(s)"),
        "{}",
        confirm.body
    );
    assert_eq!(
        bin_ids(&env, "john@a.test").await.len(),
        2,
        "a GET purges nothing"
    );
    let r = env
        .post(&b, "/domains/a.test/users/john/bin/purge", &[])
        .await;
    r.assert_redirect("/domains/a.test/users/john/bin");
    assert!(bin_ids(&env, "john@a.test").await.is_empty());
    assert!(
        env.audit_actions()
            .await
            .contains(&"user.bin.purge".to_string())
    );
}

#[tokio::test]
async fn the_api_lists_restores_and_purges_in_scope() {
    let env = Env::with_domains().await;
    deliver_and_delete(&env, "john@a.test", 3).await;
    deliver_and_delete(&env, "eve@b.test", 1).await;
    let tenant = env
        .add_admin("tenant@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let token = env.token(tenant).await;
    let t = Some(token.as_str());
    let r = env
        .api(
            Method::GET,
            "/api/v1/domains/a.test/users/john/bin",
            t,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let list = r.json();
    assert_eq!(list["total"], 3);
    assert_eq!(list["items"][0]["origin"], "pop3");
    assert_eq!(list["items"][0]["client"], "192.0.2.10");
    let uidl = list["items"][0]["uidl"].as_str().expect("uidl").to_string();
    let r = env
        .api(Method::GET, "/api/v1/domains/b.test/users/eve/bin", t, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = env
        .api(
            Method::POST,
            "/api/v1/domains/a.test/users/john/bin/restore",
            t,
            Some(json!({"all": true, "uidls": [uidl]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = env
        .api(
            Method::POST,
            "/api/v1/domains/a.test/users/john/bin/restore",
            t,
            Some(json!({"uidls": [uidl]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["restored"], 1);
    assert_eq!(r.json()["renumbered"], 0);
    let john = id(&env, "john@a.test").await;
    let live = env.store.list(john).await.expect("list");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].uid, uidl, "restored with its UIDL");

    let r = env
        .api(
            Method::POST,
            "/api/v1/domains/a.test/users/john/bin/purge",
            t,
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["purged"], 2);
    assert!(bin_ids(&env, "john@a.test").await.is_empty());
    let r = env
        .api(
            Method::POST,
            "/api/v1/domains/b.test/users/eve/bin/purge",
            t,
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(bin_ids(&env, "eve@b.test").await.len(), 1);
}

#[tokio::test]
async fn the_domain_form_and_json_carry_the_bin_settings() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    let page = env.get(&b, "/domains/a.test").await;
    assert!(
        page.body.contains(r#"name="bin_days" value="7""#),
        "{}",
        page.body
    );
    let form = [
        ("quota_bytes", ""),
        ("quota_messages", ""),
        ("max_users", ""),
        ("login_forms", "at"),
        ("enabled", "on"),
        ("bin_form", "1"),
        ("bin_days", "lots"),
    ];
    let r = env.post(&b, "/domains/a.test", &form).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&r.body, "bin_days").is_some(), "{}", r.body);
    let mut form = form.to_vec();
    form.pop();
    form.push(("bin_days", "3"));
    form.push(("bin_counts_quota", "on"));
    let r = env.post(&b, "/domains/a.test", &form).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(
        env.store
            .bin_settings(&domain("a.test"))
            .await
            .expect("settings"),
        BinSettings {
            days: 3,
            counts_quota: true
        }
    );

    let root = env.add_admin("api@admin.test", Scope::All).await;
    let token = env.token(root).await;
    let r = env
        .api(
            Method::PATCH,
            "/api/v1/domains/a.test",
            Some(&token),
            Some(json!({"bin_days": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["bin_days"], 0);
    assert_eq!(r.json()["bin_counts_quota"], true, "kept");
}

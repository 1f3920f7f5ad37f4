//! Bulletins on the page and in the API: a domain admin posts only to their own domains (not to
//! another, not to all), sees only their domains' bulletins; posting delivers at once unless
//! scheduled; posting and cancelling are audited.

use axum::http::{Method, StatusCode};
use mailstore::{Directory, Maildrops, Scope};
use serde_json::json;

use crate::support::{Env, addr, domain, field_error};

async fn messages(env: &Env, address: &str) -> usize {
    let user = env
        .store
        .find_user(&addr(address))
        .await
        .expect("find")
        .expect("user")
        .id;
    env.store.list(user).await.expect("list").len()
}

#[tokio::test]
async fn a_domain_admin_posts_bulletins_to_their_domains_only() {
    let env = Env::with_domains().await;
    env.add_user("john@a.test").await;
    env.add_user("mary@b.test").await;
    let tenant = env
        .add_admin("tenant@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let token = env.token(tenant).await;
    let post = |body| env.api(Method::POST, "/api/v1/bulletins", Some(&token), Some(body));

    let other = post(json!({"domain": "b.test", "subject": "Hi", "body": "x"})).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.body);
    let all = post(json!({"subject": "Hi", "body": "x"})).await;
    assert_eq!(all.status, StatusCode::FORBIDDEN, "{}", all.body);
    let empty = post(json!({"domain": "a.test", "subject": " ", "body": "x"})).await;
    assert_eq!(
        empty.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        empty.body
    );
    assert_eq!(messages(&env, "mary@b.test").await, 0);
    assert_eq!(messages(&env, "john@a.test").await, 0);

    let own = post(json!({"domain": "a.test", "subject": "Maintenance", "body": "Tonight."})).await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.body);
    let own = own.json();
    assert_eq!(own["state"], "delivered");
    assert_eq!(own["recipients"], 1);
    assert_eq!(own["author"], "tenant@admin.test");
    assert_eq!(messages(&env, "john@a.test").await, 1);
    assert_eq!(messages(&env, "mary@b.test").await, 0);

    // A super admin's bulletins for b.test and for all: the domain admin sees neither.
    let root = env.add_admin("root@admin.test", Scope::All).await;
    let root_token = env.token(root).await;
    for body in [
        json!({"domain": "b.test", "subject": "B only", "body": "x"}),
        json!({"domain": null, "subject": "Everyone", "body": "x"}),
    ] {
        let r = env
            .api(
                Method::POST,
                "/api/v1/bulletins",
                Some(&root_token),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    assert_eq!(messages(&env, "mary@b.test").await, 2);
    assert_eq!(messages(&env, "john@a.test").await, 2);
    let theirs = env
        .api(Method::GET, "/api/v1/bulletins", Some(&token), None)
        .await
        .json();
    let subjects: Vec<&str> = theirs
        .as_array()
        .expect("list")
        .iter()
        .map(|b| b["subject"].as_str().expect("subject"))
        .collect();
    assert_eq!(subjects, ["Maintenance"]);
    let every = env
        .api(Method::GET, "/api/v1/bulletins", Some(&root_token), None)
        .await
        .json();
    assert_eq!(every.as_array().expect("list").len(), 3);
    let posts = env
        .audit_actions()
        .await
        .into_iter()
        .filter(|a| a == "bulletin.post")
        .count();
    assert_eq!(posts, 3);
}

#[tokio::test]
async fn the_bulletins_page_posts_schedules_and_cancels_in_scope() {
    let env = Env::with_domains().await;
    env.add_user("john@a.test").await;
    let b = env.domain_admin().await;

    let page = env.get(&b, "/bulletins").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"href="/bulletins""#), "nav link");
    assert!(page.body.contains(r#"<option value="a.test""#));
    assert!(!page.body.contains("b.test"));

    let refused = env
        .post(
            &b,
            "/bulletins",
            &[("domain", "b.test"), ("subject", "Hi"), ("body", "x")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&refused.body, "domain").is_some());
    let refused = env
        .post(
            &b,
            "/bulletins",
            &[("domain", ""), ("subject", "Hi"), ("body", "x")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(messages(&env, "john@a.test").await, 0);

    let done = env
        .post(
            &b,
            "/bulletins",
            &[("domain", "a.test"), ("subject", "Now"), ("body", "x")],
        )
        .await;
    done.assert_redirect("/bulletins");
    let shown = env.follow(&b, &done).await;
    assert!(
        shown.body.contains("delivered to 1 mailboxes"),
        "{}",
        shown.body
    );
    assert_eq!(messages(&env, "john@a.test").await, 1);

    let later = env
        .post(
            &b,
            "/bulletins",
            &[
                ("domain", "a.test"),
                ("subject", "Later"),
                ("body", "x"),
                ("at", "2099-01-01T10:00"),
            ],
        )
        .await;
    later.assert_redirect("/bulletins");
    assert_eq!(messages(&env, "john@a.test").await, 1, "not yet due");
    let list = env.get(&b, "/bulletins").await.body;
    let row = list
        .split("<tr id=\"bulletin-")
        .find(|r| r.contains("Later"))
        .expect("row");
    assert!(row.contains(r#"<td class="state">scheduled</td>"#), "{row}");
    let id: String = row.chars().take_while(char::is_ascii_digit).collect();
    let cancelled = env.post(&b, &format!("/bulletins/{id}/cancel"), &[]).await;
    cancelled.assert_redirect("/bulletins");
    let list = env.get(&b, "/bulletins").await.body;
    assert!(list.contains(r#"<td class="state">cancelled</td>"#));
    assert!(
        env.audit_actions()
            .await
            .contains(&"bulletin.cancel".to_string())
    );
}

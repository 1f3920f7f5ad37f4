//! App passwords in the admin UI and the API: the user page's section with last use, a new
//! password shown once (and never stored in clear), revoking with a confirmation, all audited
//! without the password and in the reader's scope only (another tenant's admin gets 404); and
//! the domain's `app_passwords_only` in its form and JSON.

use axum::http::{Method, StatusCode};
use mailstore::{Admin, AppPasswords, Directory, Scope};
use serde_json::json;

use crate::support::{Env, addr, domain};

/// The password a "new app password" page shows.
fn shown_password(body: &str) -> String {
    let start = body.find("id=\"new-password\"").expect("password element");
    let rest = &body[start..];
    let open = rest.find('>').expect(">") + 1;
    let close = rest.find('<').expect("<");
    rest[open..close].to_string()
}

#[tokio::test]
async fn the_user_page_makes_lists_and_revokes_app_passwords() {
    let env = Env::with_domains().await;
    env.add_user("john@a.test").await;
    let b = env.domain_admin().await;

    let page = env.get(&b, "/domains/a.test/users/john").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("id=\"app-passwords-empty\""),
        "{}",
        page.body
    );

    let r = env
        .post(
            &b,
            "/domains/a.test/users/john/app-passwords",
            &[("label", "Anna's phone")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let password = shown_password(&r.body);
    assert_eq!(password.len(), 34, "{password}");
    let john = env
        .store
        .find_user(&addr("john@a.test"))
        .await
        .expect("find")
        .expect("user");
    let stored = env
        .store
        .app_password_secrets(john.id)
        .await
        .expect("secrets");
    assert_eq!(stored.len(), 1);
    assert!(stored[0].password_hash.starts_with("$argon2id$"));
    assert!(tenancy::verify_password(
        password.replace('-', "").as_bytes(),
        &stored[0].password_hash
    ));
    env.store
        .record_app_password_use(stored[0].id, Some("203.0.113.9"), "PLAIN")
        .await
        .expect("use");

    let page = env.get(&b, "/domains/a.test/users/john").await;
    assert!(
        page.body.contains("Anna&#x27;s phone") || page.body.contains("Anna&#39;s phone"),
        "{}",
        page.body
    );
    assert!(page.body.contains("203.0.113.9 (PLAIN)"), "{}", page.body);
    assert!(!page.body.contains(&password), "never shown again");

    // A label taken is refused with a message, nothing made.
    let r = env
        .post(
            &b,
            "/domains/a.test/users/john/app-passwords",
            &[("label", "Anna's phone")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        env.store
            .app_password_secrets(john.id)
            .await
            .expect("s")
            .len(),
        1
    );

    // Revoking asks first.
    let href = "/domains/a.test/users/john/app-passwords/Anna%27s%20phone/revoke";
    let confirm = env.get(&b, href).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm.body.contains("Revoke the app password"),
        "{}",
        confirm.body
    );
    let r = env.post(&b, href, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        env.store
            .app_password_secrets(john.id)
            .await
            .expect("s")
            .is_empty()
    );
    let r = env.post(&b, href, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let actions = env.audit_actions().await;
    assert!(
        actions.contains(&"user.app_password.add".to_string()),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"user.app_password.revoke".to_string()),
        "{actions:?}"
    );
    let audit = env
        .store
        .audit_page(&Scope::All, &Default::default(), 0, 100)
        .await
        .expect("audit");
    for e in &audit.items {
        for v in [&e.before, &e.after].into_iter().flatten() {
            assert!(!v.contains(&password.replace('-', "")) && !v.contains(&password));
        }
    }
}

#[tokio::test]
async fn another_tenants_admin_gets_404_and_no_form_works_without_csrf() {
    let env = Env::with_domains().await;
    env.add_user("eve@b.test").await;
    let b = env.domain_admin().await;
    for r in [
        env.get(&b, "/domains/b.test/users/eve/app-passwords/x/revoke")
            .await,
        env.post(
            &b,
            "/domains/b.test/users/eve/app-passwords",
            &[("label", "x")],
        )
        .await,
        env.post(&b, "/domains/b.test/users/eve/app-passwords/x/revoke", &[])
            .await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    }
    let tenant = env
        .add_admin("t2@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let t = env.token(tenant).await;
    let t = Some(t.as_str());
    for (method, path, body) in [
        (
            Method::GET,
            "/api/v1/domains/b.test/users/eve/app-passwords",
            None,
        ),
        (
            Method::POST,
            "/api/v1/domains/b.test/users/eve/app-passwords",
            Some(json!({"label": "x"})),
        ),
        (
            Method::DELETE,
            "/api/v1/domains/b.test/users/eve/app-passwords/x",
            None,
        ),
    ] {
        let r = env.api(method.clone(), path, t, body).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            r.body
        );
    }
    assert!(
        env.store
            .list_app_passwords(&addr("eve@b.test"))
            .await
            .expect("list")
            .is_empty()
    );
    // A form posted without the session's CSRF token changes nothing.
    env.add_user("john@a.test").await;
    let req = axum::http::Request::post("/domains/a.test/users/john/app-passwords")
        .header(axum::http::header::COOKIE, &b.cookie)
        .header(
            axum::http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(axum::body::Body::from("label=x"))
        .expect("request");
    let r = env.send(req).await;
    assert_ne!(r.status, StatusCode::OK);
    assert!(
        env.store
            .list_app_passwords(&addr("john@a.test"))
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn the_api_makes_lists_and_revokes_in_scope() {
    let env = Env::with_domains().await;
    env.add_user("john@a.test").await;
    let tenant = env
        .add_admin("tenant@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let token = env.token(tenant).await;
    let t = Some(token.as_str());
    let base = "/api/v1/domains/a.test/users/john/app-passwords";
    let r = env
        .api(Method::POST, base, t, Some(json!({"label": "laptop"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let made = r.json();
    assert_eq!(made["label"], "laptop");
    let password = made["password"].as_str().expect("password").to_string();
    assert_eq!(password.split('-').count(), 7);
    let r = env
        .api(Method::POST, base, t, Some(json!({"label": "laptop"})))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = env
        .api(Method::POST, base, t, Some(json!({"label": ""})))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    let r = env.api(Method::GET, base, t, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let list = r.json();
    assert_eq!(list["items"][0]["label"], "laptop");
    assert_eq!(list["items"][0]["last_used_at"], serde_json::Value::Null);
    assert!(!r.body.contains(&password), "never listed");
    assert!(!r.body.contains("argon2"), "nor its hash");

    let r = env
        .api(Method::DELETE, &format!("{base}/laptop"), t, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = env
        .api(Method::DELETE, &format!("{base}/laptop"), t, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_domain_form_and_json_carry_app_passwords_only() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    let r = env
        .api(Method::GET, "/api/v1/domains/a.test", None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let root = env.add_admin("root2@admin.test", Scope::All).await;
    let token = env.token(root).await;
    let t = Some(token.as_str());
    let r = env
        .api(Method::GET, "/api/v1/domains/a.test", t, None)
        .await;
    assert_eq!(r.json()["app_passwords_only"], false);
    let r = env
        .api(
            Method::PATCH,
            "/api/v1/domains/a.test",
            t,
            Some(json!({"app_passwords_only": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["app_passwords_only"], true);
    assert!(
        env.store
            .app_passwords_only(&domain("a.test"))
            .await
            .expect("read")
    );
    let page = env.get(&b, "/domains/a.test").await;
    assert!(
        page.body
            .contains("name=\"app_passwords_only\" value=\"on\" checked"),
        "{}",
        page.body
    );
}

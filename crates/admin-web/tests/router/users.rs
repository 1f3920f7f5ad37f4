//! User pages: create, quota, password, enable/disable, delete, bulk; field errors; scope.

use axum::http::{StatusCode, header};
use mailstore::{Admin, Directory, DomainSettings, LoginForms, Quota};

use crate::support::{Env, addr, domain, field_error};

async fn password_ok(env: &Env, address: &str, password: &str) -> bool {
    let auth = env
        .store
        .find_user(&addr(address))
        .await
        .unwrap()
        .expect("user");
    assert!(
        auth.scram.is_some(),
        "a SCRAM verifier is stored with the hash"
    );
    tenancy::verify_password(password.as_bytes(), &auth.password_hash)
}

#[tokio::test]
async fn a_user_is_created_edited_and_deleted_through_forms() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;

    let page = env.get(&b, "/domains/a.test/users/new").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="user-form""#));
    assert!(
        page.body
            .contains(r#"type="password" id="password" name="password""#)
    );

    let form = [
        ("local", "John"),
        ("password", "correct horse"),
        ("quota_bytes", "1G"),
        ("quota_messages", ""),
    ];
    env.post(&b, "/domains/a.test/users", &form)
        .await
        .assert_redirect("/domains/a.test/users/john");
    let u = env.user("john@a.test").await.expect("created");
    assert_eq!(u.quota.bytes, Some(1 << 30));
    assert_eq!(u.quota.messages, None);
    assert!(u.enabled);
    assert!(password_ok(&env, "john@a.test", "correct horse").await);

    let list = env.get(&b, "/domains/a.test/users").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains(r#"<table id="users">"#));
    assert!(list.body.contains(r#"<form id="bulk-form""#));
    assert!(list.body.contains(r#"name="selected" value="john""#));
    assert!(
        list.body
            .contains(r#"<meter class="usage" min="0" max="1073741824" value="0">"#)
    );
    assert!(list.body.contains(r#"href="/domains/a.test/users/john""#));
    assert!(list.body.contains(r#"id="new-user""#));

    let page = env.get(&b, "/domains/a.test/users/john").await;
    assert_eq!(page.status, StatusCode::OK);
    for id in [
        r#"id="user-form""#,
        r#"id="save""#,
        r#"id="password-form""#,
        r#"id="set-password""#,
        r#"id="enabled-form""#,
        r#"id="toggle-enabled""#,
        r#"name="enabled" value="false""#,
    ] {
        assert!(page.body.contains(id), "{id}");
    }
    assert!(page.body.contains(r#"name="quota_bytes" value="1G""#));

    let quota = [("quota_bytes", ""), ("quota_messages", "100")];
    env.post(&b, "/domains/a.test/users/john", &quota)
        .await
        .assert_redirect("/domains/a.test/users/john");
    let u = env.user("john@a.test").await.unwrap();
    assert_eq!(
        u.quota,
        Quota {
            bytes: None,
            messages: Some(100)
        }
    );

    let done = env
        .post(
            &b,
            "/domains/a.test/users/john/password",
            &[("password", "battery staple")],
        )
        .await;
    done.assert_redirect("/domains/a.test/users/john");
    // The next page says what happened, once: it clears the flash cookie.
    let page = env.follow(&b, &done).await;
    assert!(
        page.body.contains("Password of john@a.test changed</p>"),
        "{}",
        page.body
    );
    let cleared = page.headers.get_all(header::SET_COOKIE).iter().any(|c| {
        let c = c.to_str().unwrap_or_default();
        c.starts_with("__Host-pophost-flash=;") && c.contains("Max-Age=0")
    });
    assert!(cleared, "{:?}", page.headers);
    assert!(
        !env.get(&b, "/domains/a.test/users/john")
            .await
            .body
            .contains("id=\"flash\"")
    );
    assert!(password_ok(&env, "john@a.test", "battery staple").await);
    assert!(!password_ok(&env, "john@a.test", "correct horse").await);

    env.post(
        &b,
        "/domains/a.test/users/john/enabled",
        &[("enabled", "false")],
    )
    .await
    .assert_redirect("/domains/a.test/users/john");
    assert!(!env.user("john@a.test").await.unwrap().enabled);
    let page = env.get(&b, "/domains/a.test/users/john").await;
    assert!(page.body.contains(r#"name="enabled" value="true""#));
    env.post(
        &b,
        "/domains/a.test/users/john/enabled",
        &[("enabled", "true")],
    )
    .await
    .assert_redirect("/domains/a.test/users/john");
    assert!(env.user("john@a.test").await.unwrap().enabled);

    let page = env.get(&b, "/domains/a.test/users/john/delete").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="confirm-delete""#));
    assert!(page.body.contains(r#"id="confirm""#));
    env.post(&b, "/domains/a.test/users/john/delete", &[])
        .await
        .assert_redirect("/domains/a.test/users");
    assert!(env.user("john@a.test").await.is_none());
    assert_eq!(
        env.get(&b, "/domains/a.test/users/john").await.status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        env.audit_actions().await,
        [
            "user.create",
            "user.update",
            "user.password",
            "user.disable",
            "user.enable",
            "user.delete"
        ]
    );
    // The audit log never holds password material.
    let log = env
        .store
        .audit_page(&mailstore::Scope::All, &Default::default(), 0, 100)
        .await
        .unwrap();
    for e in log.items {
        let text = format!("{:?}{:?}", e.before, e.after);
        assert!(!text.contains("argon2") && !text.contains("horse") && !text.contains("SCRAM"));
        assert_eq!(e.domain, Some(domain("a.test")));
    }
}

#[tokio::test]
async fn bad_user_input_is_shown_again_with_field_errors() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    env.add_user("taken@a.test").await;

    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("local", "bob"), ("password", "short")], "password"),
        (
            &[
                ("local", "bob"),
                ("password", "long enough"),
                ("quota_bytes", "lots"),
            ],
            "quota_bytes",
        ),
        (
            &[
                ("local", "bob"),
                ("password", "long enough"),
                ("quota_messages", "1.5K"),
            ],
            "quota_messages",
        ),
        (&[("local", "Taken"), ("password", "long enough")], "local"),
        (
            &[
                ("local", "<script>alert(1)</script>"),
                ("password", "long enough"),
            ],
            "local",
        ),
    ];
    for (form, field) in cases {
        let r = env.post(&b, "/domains/a.test/users", form).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{form:?}");
        assert!(field_error(&r.body, field).is_some(), "{field}: {}", r.body);
        assert!(!r.body.contains("<script>"), "markup is escaped");
        assert!(
            !r.body.contains("long enough"),
            "the password is not sent back"
        );
    }
    assert!(env.user("bob@a.test").await.is_none());

    env.add_user("carol@a.test").await;
    let r = env
        .post(
            &b,
            "/domains/a.test/users/carol/password",
            &[("password", "1234567")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&r.body, "password").is_some());
    let r = env
        .post(
            &b,
            "/domains/a.test/users/carol",
            &[("quota_bytes", "1T"), ("quota_messages", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&r.body, "quota_bytes").is_some());
    assert!(r.body.contains(r#"value="1T""#));

    // The domain's user limit.
    let settings = DomainSettings {
        quota: Quota::default(),
        max_users: Some(2),
        login_forms: LoginForms::all(),
        enabled: true,
    };
    env.store
        .update_domain(&domain("a.test"), &settings)
        .await
        .unwrap();
    let r = env
        .post(
            &b,
            "/domains/a.test/users",
            &[("local", "dave"), ("password", "long enough")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&r.body, "local").is_some(), "{}", r.body);

    assert!(env.audit_actions().await.is_empty());
}

#[tokio::test]
async fn odd_but_valid_local_parts_are_escaped_and_reachable() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    for (local, location) in [
        ("o'brien", "/domains/a.test/users/o%27brien"),
        ("a/b?c#d", "/domains/a.test/users/a%2Fb%3Fc%23d"),
        ("new", "/domains/a.test/users/%6Eew"),
        ("bulk", "/domains/a.test/users/%62ulk"),
        ("x+y%z", "/domains/a.test/users/x%2By%25z"),
    ] {
        let form = [("local", local), ("password", "long enough")];
        env.post(&b, "/domains/a.test/users", &form)
            .await
            .assert_redirect(location);
        let page = env.get(&b, location).await;
        assert_eq!(page.status, StatusCode::OK, "{local}");
        assert!(
            page.body.contains(r#"id="password-form""#),
            "{local}: the user's own page"
        );
        assert!(env.user(&format!("{local}@a.test")).await.is_some());
        // The quota form of user `bulk` reaches that user, not the bulk action.
        env.post(&b, location, &[("quota_bytes", "1M")])
            .await
            .assert_redirect(location);
    }
    let list = env.get(&b, "/domains/a.test/users").await;
    assert!(!list.body.contains("o'brien"), "quotes are escaped");
    assert!(list.body.contains("o&#39;brien") || list.body.contains("o&#x27;brien"));
}

#[tokio::test]
async fn bulk_actions_apply_to_the_selected_users() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    for u in ["u1", "u2", "u3"] {
        env.add_user(&format!("{u}@a.test")).await;
    }
    let form = [
        ("action", "disable"),
        ("selected", "u1"),
        ("selected", "u2"),
    ];
    env.post(&b, "/domains/a.test/users/bulk", &form)
        .await
        .assert_redirect("/domains/a.test/users");
    assert!(!env.user("u1@a.test").await.unwrap().enabled);
    assert!(!env.user("u2@a.test").await.unwrap().enabled);
    assert!(env.user("u3@a.test").await.unwrap().enabled);

    let form = [("action", "enable"), ("selected", "u2")];
    env.post(&b, "/domains/a.test/users/bulk", &form)
        .await
        .assert_redirect("/domains/a.test/users");
    assert!(env.user("u2@a.test").await.unwrap().enabled);

    // Deleting is confirmed first (see helpdesk.rs); this is the confirmed form.
    let form = [
        ("action", "delete"),
        ("confirmed", "yes"),
        ("selected", "u1"),
        ("selected", "u3"),
    ];
    env.post(&b, "/domains/a.test/users/bulk", &form)
        .await
        .assert_redirect("/domains/a.test/users");
    assert!(env.user("u1@a.test").await.is_none());
    assert!(env.user("u3@a.test").await.is_none());
    assert!(env.user("u2@a.test").await.is_some());

    let r = env
        .post(
            &b,
            "/domains/a.test/users/bulk",
            &[("action", "explode"), ("selected", "u2")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        env.audit_actions().await,
        [
            "user.disable",
            "user.disable",
            "user.enable",
            "user.delete",
            "user.delete"
        ]
    );
}

#[tokio::test]
async fn a_domain_admin_manages_users_of_their_domain_only() {
    let env = Env::with_domains().await;
    env.add_user("other@b.test").await;
    let b = env.domain_admin().await;

    env.post(
        &b,
        "/domains/a.test/users",
        &[("local", "mine"), ("password", "long enough")],
    )
    .await
    .assert_redirect("/domains/a.test/users/mine");
    assert_eq!(
        env.get(&b, "/domains/a.test/users").await.status,
        StatusCode::OK
    );
    env.post(&b, "/domains/a.test/users/mine", &[("quota_bytes", "5M")])
        .await
        .assert_redirect("/domains/a.test/users/mine");
    env.post(
        &b,
        "/domains/a.test/users/bulk",
        &[("action", "disable"), ("selected", "mine")],
    )
    .await
    .assert_redirect("/domains/a.test/users");
    env.post(&b, "/domains/a.test/users/mine/delete", &[])
        .await
        .assert_redirect("/domains/a.test/users");

    for path in [
        "/domains/b.test/users",
        "/domains/b.test/users/new",
        "/domains/b.test/users/other",
        "/domains/b.test/users/other/delete",
    ] {
        assert_eq!(
            env.get(&b, path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for (path, form) in [
        (
            "/domains/b.test/users",
            vec![("local", "evil"), ("password", "long enough")],
        ),
        ("/domains/b.test/users/other", vec![("quota_bytes", "1")]),
        (
            "/domains/b.test/users/other/password",
            vec![("password", "long enough")],
        ),
        (
            "/domains/b.test/users/other/enabled",
            vec![("enabled", "false")],
        ),
        ("/domains/b.test/users/other/delete", vec![]),
        (
            "/domains/b.test/users/bulk",
            vec![("action", "delete"), ("selected", "other")],
        ),
    ] {
        let r = env.post(&b, path, &form).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    let other = env.user("other@b.test").await.expect("untouched");
    assert!(other.enabled);
    assert_eq!(other.quota, Quota::default());
    assert!(env.user("evil@b.test").await.is_none());
}

//! Domain pages: create, edit, aliases, delete; field errors; a domain admin's limits.

use axum::http::StatusCode;
use mailstore::{Admin, Directory, DomainSettings, LoginForms, Quota};

use crate::support::{Env, domain, field_error};

#[tokio::test]
async fn super_admin_creates_edits_and_deletes_a_domain() {
    let env = Env::new().await;
    let b = env.super_admin().await;

    let page = env.get(&b, "/domains/new").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="domain-form""#));
    assert!(
        page.body
            .contains(&format!(r#"name="_csrf" value="{}""#, b.csrf))
    );

    env.post(&b, "/domains", &[("name", "New.Test")])
        .await
        .assert_redirect("/domains/new.test");
    let d = env.store.domain_detail(&domain("new.test")).await.unwrap();
    assert!(d.is_some(), "domain created");

    let page = env.get(&b, "/domains/new.test").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="save""#));
    assert!(
        page.body
            .contains(r#"id="delete-domain" href="/domains/new.test/delete""#)
    );
    assert!(
        page.body
            .contains(r#"id="users" href="/domains/new.test/users""#)
    );

    let settings = [
        ("quota_bytes", "10M"),
        ("quota_messages", "5K"),
        ("max_users", "3"),
        ("login_forms", "at"),
        ("login_forms", "plus"),
        ("enabled", "on"),
    ];
    env.post(&b, "/domains/new.test", &settings)
        .await
        .assert_redirect("/domains/new.test");
    let d = env
        .store
        .domain_detail(&domain("new.test"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.quota.bytes, Some(10 * 1024 * 1024));
    assert_eq!(d.quota.messages, Some(5000));
    assert_eq!(d.max_users, Some(3));
    assert_eq!(d.login_forms.to_string(), "at,plus");
    assert!(d.enabled);

    // The form shows the values back the way they were typed.
    let page = env.get(&b, "/domains/new.test").await;
    assert!(page.body.contains(r#"name="quota_bytes" value="10M""#));
    assert!(page.body.contains(r#"value="plus" checked"#));
    assert!(!page.body.contains(r#"value="bare" checked"#));

    // An unticked box is absent from the form: the domain is disabled, limits cleared.
    let settings = [
        ("quota_bytes", ""),
        ("quota_messages", "unlimited"),
        ("max_users", ""),
        ("login_forms", "at"),
    ];
    env.post(&b, "/domains/new.test", &settings)
        .await
        .assert_redirect("/domains/new.test");
    let d = env
        .store
        .domain_detail(&domain("new.test"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.quota, Quota::default());
    assert_eq!(d.max_users, None);
    assert!(!d.enabled);

    env.post(&b, "/domains/new.test/aliases", &[("alias", "Other.Test")])
        .await
        .assert_redirect("/domains/new.test");
    let d = env
        .store
        .domain_detail(&domain("new.test"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.aliases, vec![domain("other.test")]);
    let page = env.get(&b, "/domains/new.test").await;
    assert!(
        page.body
            .contains(r#"action="/domains/new.test/aliases/other.test/delete""#)
    );
    env.post(&b, "/domains/new.test/aliases/other.test/delete", &[])
        .await
        .assert_redirect("/domains/new.test");
    let d = env
        .store
        .domain_detail(&domain("new.test"))
        .await
        .unwrap()
        .unwrap();
    assert!(d.aliases.is_empty());
    // Removing an alias that is not this domain's is a 404.
    let r = env
        .post(&b, "/domains/new.test/aliases/other.test/delete", &[])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let page = env.get(&b, "/domains/new.test/delete").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="confirm-delete""#));
    assert!(page.body.contains(r#"name="force""#));

    // With users left, deleting needs "force".
    env.add_user("someone@new.test").await;
    let r = env.post(&b, "/domains/new.test/delete", &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&r.body, "force").is_some(), "{}", r.body);
    env.post(&b, "/domains/new.test/delete", &[("force", "on")])
        .await
        .assert_redirect("/domains");
    assert!(
        env.store
            .domain_detail(&domain("new.test"))
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(
        env.audit_actions().await,
        [
            "domain.create",
            "domain.update",
            "domain.update",
            "domain.alias.add",
            "domain.alias.remove",
            "domain.delete"
        ]
    );
}

#[tokio::test]
async fn listing_searches_and_pages() {
    let env = Env::with_domains().await;
    for i in 0..30 {
        env.store
            .add_domain(&domain(&format!("d{i:02}.example")))
            .await
            .unwrap();
    }
    let d = domain("a.test");
    let settings = DomainSettings {
        quota: Quota {
            bytes: Some(1 << 20),
            messages: None,
        },
        max_users: None,
        login_forms: LoginForms::all(),
        enabled: true,
    };
    env.store.update_domain(&d, &settings).await.unwrap();
    let b = env.super_admin().await;

    let page = env.get(&b, "/domains").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"<table id="domains">"#));
    assert!(page.body.contains(r#"<form id="search""#));
    assert!(page.body.contains(r#"id="new-domain" href="/domains/new""#));
    assert!(
        page.body
            .contains(r#"<a href="/domains/a.test">a.test</a>"#)
    );
    assert!(
        page.body
            .contains(r#"<meter class="usage" min="0" max="1048576" value="0">"#)
    );
    assert!(page.body.contains("Page 1 of 2"));
    assert!(page.body.contains(r#"id="next-page""#));

    let page = env.get(&b, "/domains?page=2").await;
    assert!(page.body.contains("Page 2 of 2"));
    assert!(page.body.contains(r#"id="prev-page""#));

    let page = env.get(&b, "/domains?q=d1").await;
    assert!(page.body.contains("d10.example"));
    assert!(!page.body.contains("d20.example"));
    assert!(!page.body.contains(">a.test<"));

    // A search term is shown escaped, and passed on encoded.
    let page = env.get(&b, "/domains?q=%3Cscript%3Ex%26").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("<script>"));
    assert!(page.body.contains("&#60;script&#62;"));
}

#[tokio::test]
async fn bad_input_is_shown_again_with_field_errors() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;

    let r = env.post(&b, "/domains", &[("name", "not a domain!")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&r.body, "name").is_some(), "{}", r.body);
    assert!(r.body.contains(r#"value="not a domain!""#));

    let r = env.post(&b, "/domains", &[("name", "a.test")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let e = field_error(&r.body, "name").expect("duplicate is a field error");
    assert!(e.contains("already exists"), "{e}");

    let settings = [
        ("quota_bytes", "10X"),
        ("quota_messages", "-1"),
        ("max_users", "99999999999999999999"),
        ("enabled", "on"),
    ];
    let r = env.post(&b, "/domains/a.test", &settings).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["quota_bytes", "quota_messages", "max_users", "login_forms"] {
        assert!(field_error(&r.body, field).is_some(), "{field}: {}", r.body);
    }
    assert!(r.body.contains(r#"value="10X""#), "typed values are kept");
    let d = env
        .store
        .domain_detail(&domain("a.test"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.quota, Quota::default(), "nothing changed");

    // Not a valid domain name, and markup: rejected, and shown escaped.
    let r = env
        .post(
            &b,
            "/domains/a.test/aliases",
            &[("alias", "<script>alert(1)</script>")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&r.body, "alias").is_some(), "{}", r.body);
    assert!(!r.body.contains("<script>"));
    assert!(r.body.contains("&#60;script&#62;"));

    // An alias cannot take another domain's name.
    let r = env
        .post(&b, "/domains/a.test/aliases", &[("alias", "b.test")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&r.body, "alias").is_some(), "{}", r.body);

    assert!(env.audit_actions().await.is_empty());
}

#[tokio::test]
async fn a_domain_admin_sees_only_their_domain_read_only() {
    let env = Env::with_domains().await;
    let b = env.domain_admin().await;

    let page = env.get(&b, "/domains").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(">a.test<"));
    assert!(!page.body.contains("b.test"));
    assert!(!page.body.contains("new-domain"));

    let page = env.get(&b, "/domains/a.test").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="domain-form""#));
    assert!(page.body.contains("disabled"));
    assert!(!page.body.contains(r#"id="save""#));
    assert!(!page.body.contains(r#"id="delete-domain""#));
    assert!(!page.body.contains(r#"id="alias-form""#));

    // The other tenant's pages do not exist for this admin.
    for path in [
        "/domains/b.test",
        "/domains/b.test/users",
        "/domains/b.test/delete",
    ] {
        assert_eq!(
            env.get(&b, path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for path in [
        "/domains/b.test",
        "/domains/b.test/aliases",
        "/domains/b.test/delete",
        "/domains/b.test/users",
    ] {
        let r = env
            .post(&b, path, &[("alias", "x.test"), ("name", "x")])
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }

    // Service-wide actions on their own domain are forbidden.
    assert_eq!(
        env.get(&b, "/domains/new").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        env.get(&b, "/domains/a.test/delete").await.status,
        StatusCode::FORBIDDEN
    );
    for (path, fields) in [
        ("/domains", vec![("name", "mine.test")]),
        (
            "/domains/a.test",
            vec![("quota_bytes", "1G"), ("login_forms", "at")],
        ),
        ("/domains/a.test/aliases", vec![("alias", "alias.test")]),
        ("/domains/a.test/delete", vec![("force", "on")]),
    ] {
        let r = env.post(&b, path, &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert!(
        env.store
            .domain_detail(&domain("a.test"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        env.store
            .domain_detail(&domain("mine.test"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(env.audit_actions().await.is_empty());
}

#[tokio::test]
async fn posts_need_the_session_csrf_token() {
    let env = Env::with_domains().await;
    let mut b = env.super_admin().await;
    b.csrf = "forged".into();
    let r = env.post(&b, "/domains", &[("name", "csrf.test")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        env.store
            .domain_detail(&domain("csrf.test"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn signed_out_requests_go_to_sign_in() {
    let env = Env::with_domains().await;
    let nobody = crate::support::Browser {
        cookie: String::new(),
        csrf: String::new(),
    };
    let r = env.get(&nobody, "/domains").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/signin");
}

//! The help desk's daily jobs: every action says what it did, errors sit under their field,
//! bulk deletion asks first, one search box finds anyone in scope, listings page as asked, the
//! sessions page filters, refused attempts are counted, and a domain admin's audit log hides
//! the ISP staff's addresses.

use axum::http::{Method, StatusCode, header};
use mailstore::{
    Admin, AuditEntry, Directory, DomainSettings, LoginForms, Maildrops, Quota, QuotaChange, Scope,
};

use crate::support::{Browser, Env, Reply, addr, domain, field_error};

/// The flash a redirect leaves, as the next page shows it: `(ok, message)`.
async fn flash(env: &Env, b: &Browser, reply: &Reply) -> (bool, String) {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "body: {}", reply.body);
    let page = env.follow(b, reply).await;
    let start = page
        .body
        .find(r#"<p id="flash""#)
        .unwrap_or_else(|| panic!("no flash on {}: {}", reply.location(), page.body));
    let tag_end = start + page.body[start..].find('>').unwrap() + 1;
    let text_end = tag_end + page.body[tag_end..].find("</p>").unwrap();
    let ok = page.body[start..tag_end].contains("flash-ok");
    (ok, page.body[tag_end..text_end].to_string())
}

async fn set_domain_quota(env: &Env, name: &str, bytes: Option<u64>) {
    let settings = DomainSettings {
        quota: Quota {
            bytes,
            messages: None,
        },
        max_users: None,
        login_forms: LoginForms::all(),
        enabled: true,
    };
    env.store
        .update_domain(&domain(name), &settings)
        .await
        .expect("domain quota");
}

async fn lock(env: &Env, address: &str) {
    let id = env
        .store
        .find_user(&addr(address))
        .await
        .unwrap()
        .unwrap()
        .id;
    env.store.lock(id).await.expect("lock");
}

#[tokio::test]
async fn every_action_says_what_it_did() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;

    let r = env.post(&b, "/domains", &[("name", "new.test")]).await;
    assert_eq!(r.location(), "/domains/new.test");
    assert_eq!(
        flash(&env, &b, &r).await,
        (true, "Domain new.test created".into())
    );

    let settings = [
        ("quota_bytes", "1G"),
        ("quota_messages", ""),
        ("max_users", ""),
        ("login_forms", "at"),
        ("enabled", "on"),
    ];
    let r = env.post(&b, "/domains/new.test", &settings).await;
    assert_eq!(flash(&env, &b, &r).await.1, "Settings of new.test saved");
    let r = env
        .post(&b, "/domains/new.test/aliases", &[("alias", "Other.TEST")])
        .await;
    assert_eq!(
        flash(&env, &b, &r).await.1,
        "Alias other.test added to new.test"
    );
    let r = env
        .post(&b, "/domains/new.test/aliases/other.test/delete", &[])
        .await;
    assert_eq!(
        flash(&env, &b, &r).await.1,
        "Alias other.test of new.test removed"
    );
    let policies = [("quota_warn_percent", "80")];
    let r = env.post(&b, "/domains/new.test/policies", &policies).await;
    assert_eq!(flash(&env, &b, &r).await.1, "Policies of new.test saved");

    let new_user = [
        ("local", "john"),
        ("password", "correct horse"),
        ("quota_bytes", ""),
        ("quota_messages", ""),
    ];
    let r = env.post(&b, "/domains/a.test/users", &new_user).await;
    assert_eq!(r.location(), "/domains/a.test/users/john");
    assert_eq!(flash(&env, &b, &r).await.1, "User john@a.test created");
    let quota = [("quota_bytes", "500M"), ("quota_messages", "")];
    let r = env.post(&b, "/domains/a.test/users/john", &quota).await;
    assert_eq!(
        flash(&env, &b, &r).await,
        (true, "Quota of john@a.test set to 500.0 MiB".into())
    );
    let quota = [("quota_bytes", ""), ("quota_messages", "10K")];
    let r = env.post(&b, "/domains/a.test/users/john", &quota).await;
    assert_eq!(
        flash(&env, &b, &r).await.1,
        "Quota of john@a.test set to unlimited and 10000 messages"
    );
    let r = env
        .post(
            &b,
            "/domains/a.test/users/john/enabled",
            &[("enabled", "false")],
        )
        .await;
    assert_eq!(
        flash(&env, &b, &r).await.1,
        "john@a.test disabled: cannot log in"
    );
    let r = env
        .post(
            &b,
            "/domains/a.test/users/john/enabled",
            &[("enabled", "true")],
        )
        .await;
    assert_eq!(flash(&env, &b, &r).await.1, "john@a.test enabled");

    // Ending a session: one that is there, then one that is not (an error, not a 404 page).
    lock(&env, "john@a.test").await;
    let r = env.post(&b, "/sessions/john@a.test/end", &[]).await;
    assert_eq!(r.location(), "/sessions");
    assert_eq!(
        flash(&env, &b, &r).await,
        (true, "Session of john@a.test ended".into())
    );
    let r = env.post(&b, "/sessions/john@a.test/end", &[]).await;
    assert_eq!(
        flash(&env, &b, &r).await,
        (false, "No session to end for john@a.test".into())
    );

    let r = env.post(&b, "/domains/a.test/users/john/delete", &[]).await;
    assert_eq!(r.location(), "/domains/a.test/users");
    assert_eq!(flash(&env, &b, &r).await.1, "User john@a.test deleted");
    let r = env.post(&b, "/domains/new.test/delete", &[]).await;
    assert_eq!(flash(&env, &b, &r).await.1, "Domain new.test deleted");
}

#[tokio::test]
async fn a_user_quota_above_the_domains_is_an_error_under_the_field_with_the_form_kept() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    env.add_user("john@a.test").await;
    set_domain_quota(&env, "a.test", Some(1 << 30)).await;

    let quota = [("quota_bytes", "2G"), ("quota_messages", "5K")];
    let r = env.post(&b, "/domains/a.test/users/john", &quota).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_error(&r.body, "quota_bytes").as_deref(),
        Some("Larger than the domain&#39;s storage quota")
    );
    assert_eq!(field_error(&r.body, "quota_messages"), None);
    // The whole edit page, with what was typed.
    assert!(r.body.contains(r#"id="user-form""#), "{}", r.body);
    assert!(r.body.contains(r#"value="2G""#));
    assert!(r.body.contains(r#"value="5K""#));
    assert_eq!(
        env.user("john@a.test").await.unwrap().quota,
        Quota::default()
    );

    // No user limit means the domain's, as in the API and the CLI (the store's one rule).
    let quota = [("quota_bytes", ""), ("quota_messages", "")];
    env.post(&b, "/domains/a.test/users/john", &quota)
        .await
        .assert_redirect("/domains/a.test/users/john");
    // A new user whose quota is refused leaves no account behind.
    let new_user = [
        ("local", "anna"),
        ("password", "correct horse"),
        ("quota_bytes", "3G"),
        ("quota_messages", ""),
    ];
    let r = env.post(&b, "/domains/a.test/users", &new_user).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&r.body, "quota_bytes").is_some());
    assert_eq!(field_error(&r.body, "local"), None);
    assert!(r.body.contains(r#"value="anna""#));
    assert!(env.user("anna@a.test").await.is_none());

    // The API says the same, and leaves no account either (it used to leave one, unaudited).
    let admin = env.add_admin("api@admin.test", mailstore::Scope::All).await;
    let token = env.token(admin).await;
    let body =
        serde_json::json!({"local": "bob", "password": "correct horse", "quota_bytes": "3G"});
    let r = env
        .api(
            axum::http::Method::POST,
            "/api/v1/domains/a.test/users",
            Some(&token),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("storage quota"), "{}", r.body);
    assert!(env.user("bob@a.test").await.is_none());
}

#[tokio::test]
async fn a_domain_quota_below_a_users_is_an_error_under_the_quota_not_the_user_limit() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    env.add_user("john@a.test").await;
    let big = QuotaChange {
        bytes: Some(Some(500 << 20)),
        messages: None,
    };
    env.store
        .set_user_quota(&addr("john@a.test"), big)
        .await
        .unwrap();

    let settings = [
        ("quota_bytes", "100M"),
        ("quota_messages", ""),
        ("max_users", "7"),
        ("login_forms", "at"),
        ("enabled", "on"),
    ];
    let r = env.post(&b, "/domains/a.test", &settings).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        field_error(&r.body, "quota_bytes").is_some_and(|e| e.contains("quota")),
        "{}",
        r.body
    );
    assert_eq!(field_error(&r.body, "max_users"), None);
    assert_eq!(field_error(&r.body, "quota_messages"), None);
    assert!(r.body.contains(r#"value="100M""#));
    assert!(r.body.contains(r#"value="7""#));
}

#[tokio::test]
async fn bulk_delete_asks_first_and_the_table_has_select_all() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    for u in ["u1", "u2", "u3"] {
        env.add_user(&format!("{u}@a.test")).await;
    }
    let page = env.get(&b, "/domains/a.test/users").await;
    assert!(
        page.body
            .contains(r#"id="select-all" data-select-all="selected""#)
    );
    assert!(
        page.body
            .contains(r#"<script src="/static/select-all.js" defer></script>"#)
    );
    let script = env.get(&b, "/static/select-all.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(
        script.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(script.body.contains("data-select-all"));

    let form = [("action", "delete"), ("selected", "u1"), ("selected", "u3")];
    let confirm = env.post(&b, "/domains/a.test/users/bulk", &form).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm.body.contains("<li>u1@a.test</li>"),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains("<li>u3@a.test</li>"));
    assert!(!confirm.body.contains("u2@a.test"));
    assert!(confirm.body.contains(r#"name="confirmed" value="yes""#));
    assert!(env.user("u1@a.test").await.is_some(), "nothing deleted yet");

    let form = [
        ("action", "delete"),
        ("confirmed", "yes"),
        ("selected", "u1"),
        ("selected", "u3"),
    ];
    let r = env.post(&b, "/domains/a.test/users/bulk", &form).await;
    assert_eq!(r.location(), "/domains/a.test/users");
    assert_eq!(flash(&env, &b, &r).await, (true, "2 users deleted".into()));
    assert!(env.user("u1@a.test").await.is_none());
    assert!(env.user("u2@a.test").await.is_some());

    let r = env
        .post(&b, "/domains/a.test/users/bulk", &[("action", "disable")])
        .await;
    assert_eq!(
        flash(&env, &b, &r).await,
        (false, "No users selected".into())
    );
    let form = [("action", "disable"), ("selected", "u2")];
    let r = env.post(&b, "/domains/a.test/users/bulk", &form).await;
    assert_eq!(flash(&env, &b, &r).await.1, "1 user disabled");
}

#[tokio::test]
async fn search_finds_anyone_in_scope_and_goes_straight_to_a_single_match() {
    let env = Env::with_domains().await;
    env.store
        .add_alias(&domain("alias.test"), &domain("a.test"))
        .await
        .unwrap();
    for a in ["john@a.test", "johnny@a.test", "joe@b.test", "eve@b.test"] {
        env.add_user(a).await;
    }
    let root = env.super_admin().await;
    let tenant = env.domain_admin().await;
    assert!(
        env.get(&root, "/")
            .await
            .body
            .contains(r#"action="/search""#)
    );

    // A full address, through an alias too, opens the user even with other prefix matches.
    env.get(&root, "/search?q=john%40a.test")
        .await
        .assert_redirect("/domains/a.test/users/john");
    env.get(&root, "/search?q=JOHN%40alias.test")
        .await
        .assert_redirect("/domains/a.test/users/john");
    // One match: straight there; in the tenant's scope, eve is nobody.
    env.get(&root, "/search?q=eve")
        .await
        .assert_redirect("/domains/b.test/users/eve");
    let r = env.get(&tenant, "/search?q=eve").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.body.contains("eve@b.test"));
    assert!(r.body.contains("No user matches"));
    let r = env.get(&tenant, "/search?q=eve%40b.test").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.body.contains("/domains/b.test"));

    // Several: a list, by address.
    let r = env.get(&root, "/search?q=jo").await;
    assert_eq!(r.status, StatusCode::OK);
    let (john, johnny, joe) = (
        r.body.find(">john@a.test<").expect("john"),
        r.body.find(">johnny@a.test<").expect("johnny"),
        r.body.find(">joe@b.test<").expect("joe"),
    );
    assert!(joe < john && john < johnny);
    let r = env.get(&tenant, "/search?q=jo").await;
    assert!(r.body.contains(">john@a.test<") && !r.body.contains("joe@b.test"));

    // A domain, by name or alias, and no user: its users.
    env.get(&root, "/search?q=b.test")
        .await
        .assert_redirect("/domains/b.test/users");
    env.get(&tenant, "/search?q=alias")
        .await
        .assert_redirect("/domains/a.test/users");
    let r = env.get(&tenant, "/search?q=b.test").await;
    assert!(r.body.contains("No domain matches"));
    // Prefix with a domain part: john@a matches john and johnny of a.test only.
    let r = env.get(&root, "/search?q=john%40a").await;
    assert!(r.body.contains(">johnny@a.test<"));
}

#[tokio::test]
async fn listings_page_as_asked_and_past_the_end_shows_the_last_page() {
    let env = Env::new().await;
    for i in 0..30 {
        env.store
            .add_domain(&domain(&format!("d{i:02}.test")))
            .await
            .unwrap();
    }
    let b = env.super_admin().await;
    let page = env.get(&b, "/domains").await;
    assert!(page.body.contains("Page 1 of 2 (30 found)"));
    assert!(page.body.contains(r#"<form id="jump""#));
    assert!(page.body.contains(r#"<option value="100">100</option>"#));
    let page = env.get(&b, "/domains?per_page=100").await;
    assert!(page.body.contains("Page 1 of 1"));
    assert!(page.body.contains(">d29.test<"));
    assert!(page.body.contains(r#"<option value="100" selected>"#));
    let page = env.get(&b, "/domains?per_page=10&page=99").await;
    assert!(page.body.contains("Page 3 of 3"), "{}", page.body);
    assert!(page.body.contains(">d29.test<") && !page.body.contains(">d19.test<"));
    assert!(page.body.contains(r#"href="?per_page=10&#38;page=2""#));
    // The search term is carried along by the pager.
    let page = env.get(&b, "/domains?q=d1&per_page=5").await;
    assert!(
        page.body
            .contains(r#"href="?q=d1&#38;per_page=5&#38;page=2""#)
    );
    assert!(
        page.body
            .contains(r#"<input type="hidden" name="q" value="d1">"#)
    );

    // The API: per_page, at most 500, and the Link header.
    let root = env.add_admin("api@admin.test", Scope::All).await;
    let token = env.token(root).await;
    let r = env
        .api(
            Method::GET,
            "/api/v1/domains?per_page=10&page=2",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.json()["items"].as_array().map(Vec::len), Some(10));
    assert_eq!(r.json()["total"], 30);
    let link = r.headers[header::LINK].to_str().unwrap().to_string();
    for rel in [
        r#"</api/v1/domains?per_page=10&page=1>; rel="first""#,
        r#"</api/v1/domains?per_page=10&page=1>; rel="prev""#,
        r#"</api/v1/domains?per_page=10&page=3>; rel="next""#,
        r#"</api/v1/domains?per_page=10&page=3>; rel="last""#,
    ] {
        assert!(link.contains(rel), "{rel} in {link}");
    }
    let r = env
        .api(
            Method::GET,
            "/api/v1/domains?per_page=10&page=7",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.json()["items"][0]["name"], "d20.test");
    assert!(!r.headers[header::LINK].to_str().unwrap().contains("next"));
    let r = env
        .api(
            Method::GET,
            "/api/v1/domains?per_page=100000",
            Some(&token),
            None,
        )
        .await;
    assert!(
        r.headers[header::LINK]
            .to_str()
            .unwrap()
            .contains("per_page=500")
    );

    env.add_user("x1@d00.test").await;
    env.add_user("x2@d00.test").await;
    let r = env
        .api(
            Method::GET,
            "/api/v1/domains/d00.test/users?per_page=1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.json()["items"][0]["address"], "x1@d00.test");
    assert!(
        r.headers[header::LINK]
            .to_str()
            .unwrap()
            .contains(r#"</api/v1/domains/d00.test/users?per_page=1&page=2>; rel="next""#)
    );
}

#[tokio::test]
async fn the_sessions_page_filters_and_shows_client_and_tls() {
    let env = Env::with_domains().await;
    for a in ["bob@a.test", "ann@a.test", "eve@b.test"] {
        env.add_user(a).await;
        lock(&env, a).await;
    }
    let b = env.super_admin().await;
    let page = env.get(&b, "/sessions").await;
    assert!(page.body.contains("<th>Client</th><th>TLS</th>"));
    assert!(
        page.body.contains(r#"<td class="client">-</td>"#),
        "{}",
        page.body
    );
    assert_eq!(page.body.matches(r#"<td class="address">"#).count(), 3);

    let page = env.get(&b, "/sessions?domain=a.test").await;
    assert_eq!(page.body.matches(r#"<td class="address">"#).count(), 2);
    assert!(!page.body.contains("eve@b.test"));
    let page = env.get(&b, "/sessions?address=bo&domain=").await;
    assert_eq!(page.body.matches(r#"<td class="address">"#).count(), 1);
    assert!(page.body.contains("bob@a.test"));
    let page = env.get(&b, "/sessions?address=nobody").await;
    assert!(page.body.contains("No active sessions match the filter"));

    let id = env.add_admin("api@admin.test", Scope::All).await;
    let token = env.token(id).await;
    let r = env
        .api(
            Method::GET,
            "/api/v1/sessions?domain=b.test",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.json()[0]["address"], "eve@b.test");
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    assert!(r.headers.contains_key(header::LINK));
}

#[tokio::test]
async fn refused_attempts_are_counted() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let count = |kind: &str| {
        let line = format!("pophost_admin_refused_total{{kind=\"{kind}\"}} ");
        handle
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&line).map(|n| n.parse::<u64>().unwrap()))
            .unwrap_or(0)
    };

    let env = Env::with_domains().await;
    env.add_user("eve@b.test").await;
    let root = env.super_admin().await;
    let tenant = env.domain_admin().await;

    // Another tenant's objects, in the browser and the API: 404, counted.
    assert_eq!(
        env.get(&tenant, "/domains/b.test/users").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.post(&tenant, "/sessions/eve@b.test/end", &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let tenant_id = env
        .store
        .find_admin("tenant@admin.test")
        .await
        .unwrap()
        .unwrap()
        .id;
    let token = env.token(tenant_id).await;
    let r = env
        .api(
            Method::GET,
            "/api/v1/domains/b.test/users",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(count("cross_tenant"), 3);

    // A super-admin action: 403, counted.
    let r = env
        .post(&tenant, "/domains", &[("name", "mine.test")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(count("forbidden"), 1);

    // Not refusals: a super admin's typo, a tenant's own missing user.
    let r = env.get(&root, "/domains/nowhere.test").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = env.get(&tenant, "/domains/a.test/users/nobody").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(count("cross_tenant"), 3);
    assert_eq!(count("forbidden"), 1);
}

#[tokio::test]
async fn a_domain_admin_sees_their_domains_audit_log_without_the_staffs_addresses() {
    let env = Env::with_domains().await;
    let entry = |actor: &str, domain_name: &str, ip: &str| AuditEntry {
        at: 0,
        actor: actor.into(),
        action: "user.update".into(),
        object: format!("john@{domain_name}"),
        domain: Some(domain(domain_name)),
        before: None,
        after: None,
        ip: Some(ip.into()),
        success: true,
    };
    for e in [
        entry("root@admin.test", "a.test", "192.0.2.10"),
        entry("tenant@admin.test", "a.test", "198.51.100.7"),
        entry("root@admin.test", "b.test", "192.0.2.11"),
    ] {
        env.store.record_audit(&e).await.unwrap();
    }
    let root = env.super_admin().await;
    let tenant = env.domain_admin().await;

    let page = env.get(&tenant, "/audit").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("john@a.test"));
    assert!(!page.body.contains("john@b.test"), "another tenant's entry");
    assert!(page.body.contains("198.51.100.7"), "their own address");
    assert!(!page.body.contains("192.0.2.10"), "the staff's address");
    assert!(
        page.body.contains("root@admin.test"),
        "who did it is still said"
    );

    let page = env.get(&root, "/audit").await;
    for ip in ["192.0.2.10", "198.51.100.7", "192.0.2.11"] {
        assert!(page.body.contains(ip), "{ip}");
    }
}

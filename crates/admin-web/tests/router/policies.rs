//! Mailbox policies (issue 6): the page and the API resource, validation, audit, and who may
//! change them.

use axum::http::{Method, StatusCode};
use mailstore::{DomainPolicies, Policies, Scope};
use serde_json::json;

use crate::support::{Env, domain, field_error};

#[tokio::test]
async fn a_super_admin_edits_policies_on_the_page() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    let page = env.get(&b, "/domains/a.test").await;
    assert!(
        page.body
            .contains(r#"id="policies" href="/domains/a.test/policies""#)
    );
    let page = env.get(&b, "/domains/a.test/policies").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="save-policies""#));
    assert!(
        page.body
            .contains(r#"name="quota_warn_percent" value="90""#),
        "default 90 %"
    );

    let fields = [
        ("quota_tempfail", "on"),
        ("quota_warn_percent", "80"),
        ("retention_days", "30"),
        ("login_delay_secs", "900"),
    ];
    env.post(&b, "/domains/a.test/policies", &fields)
        .await
        .assert_redirect("/domains/a.test/policies");
    let p = env.store.domain_policies(&domain("a.test")).await.unwrap();
    assert_eq!(
        p,
        DomainPolicies {
            quota_tempfail: true,
            quota_warn_percent: Some(80),
            retention_days: Some(30),
            login_delay_secs: Some(900),
        }
    );
    assert!(
        env.audit_actions()
            .await
            .contains(&"domain.policies".to_string())
    );

    // Empty fields clear; an unticked box is false.
    env.post(&b, "/domains/a.test/policies", &[("retention_days", "")])
        .await
        .assert_redirect("/domains/a.test/policies");
    let p = env.store.domain_policies(&domain("a.test")).await.unwrap();
    assert_eq!(
        p,
        DomainPolicies {
            quota_tempfail: false,
            quota_warn_percent: None,
            retention_days: None,
            login_delay_secs: None
        }
    );

    // Bad values: 422 with the field named, nothing changed.
    let r = env
        .post(
            &b,
            "/domains/a.test/policies",
            &[("retention_days", "0"), ("quota_warn_percent", "101")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        field_error(&r.body, "retention_days").is_some(),
        "{}",
        r.body
    );
    assert!(
        field_error(&r.body, "quota_warn_percent").is_some(),
        "{}",
        r.body
    );
    assert_eq!(
        env.store.domain_policies(&domain("a.test")).await.unwrap(),
        p
    );
}

#[tokio::test]
async fn a_domain_admin_sees_policies_read_only() {
    let env = Env::with_domains().await;
    let b = env.domain_admin().await;
    let page = env.get(&b, "/domains/a.test/policies").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("(read-only)"));
    assert!(!page.body.contains(r#"id="save-policies""#));
    let r = env
        .post(&b, "/domains/a.test/policies", &[("retention_days", "1")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        env.get(&b, "/domains/b.test/policies").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.store.domain_policies(&domain("a.test")).await.unwrap(),
        DomainPolicies::default()
    );
}

#[tokio::test]
async fn the_api_reads_and_patches_policies() {
    let env = Env::with_domains().await;
    let root = env.add_admin("root@admin.test", Scope::All).await;
    let t = env.token(root).await;
    let t = Some(t.as_str());
    let path = "/api/v1/domains/a.test/policies";
    let r = env.api(Method::GET, path, t, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"quota_tempfail": false, "quota_warn_percent": 90, "retention_days": null, "login_delay_secs": null})
    );
    let r = env
        .api(
            Method::PATCH,
            path,
            t,
            Some(json!({"retention_days": 14, "quota_tempfail": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["retention_days"], 14);
    assert_eq!(r.json()["quota_warn_percent"], 90, "absent fields are kept");
    let r = env
        .api(
            Method::PATCH,
            path,
            t,
            Some(json!({"quota_warn_percent": null})),
        )
        .await;
    assert_eq!(r.json()["quota_warn_percent"], json!(null));
    assert_eq!(r.json()["retention_days"], 14);
    for bad in [
        json!({"retention_days": 0}),
        json!({"login_delay_secs": -1}),
        json!({"nope": 1}),
    ] {
        let r = env.api(Method::PATCH, path, t, Some(bad.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.body
        );
        assert!(r.json()["error"].is_string());
    }
    let tenant = env
        .add_admin("tenant@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let tt = env.token(tenant).await;
    let tt = Some(tt.as_str());
    assert_eq!(
        env.api(Method::GET, path, tt, None).await.status,
        StatusCode::OK
    );
    let r = env
        .api(Method::PATCH, path, tt, Some(json!({"retention_days": 1})))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let other = env
        .api(Method::GET, "/api/v1/domains/b.test/policies", tt, None)
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(
        env.store
            .domain_policies(&domain("a.test"))
            .await
            .unwrap()
            .retention_days,
        Some(14)
    );
}

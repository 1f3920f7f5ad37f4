//! The JSON API: bearer tokens, CRUD, PATCH semantics, scope, sessions, the OpenAPI document.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode, header};
use mailstore::{Admin, Directory, Maildrops, Scope};
use serde_json::{Value, json};

use crate::support::{Env, domain};

#[tokio::test]
async fn requests_without_a_valid_token_are_401_json() {
    let env = Env::with_domains().await;
    let r = env.api(Method::GET, "/api/v1/domains", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"].is_string(), "{}", r.body);

    let r = env
        .api(Method::GET, "/api/v1/domains", Some("nope"), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A browser session is no API credential.
    let b = env.super_admin().await;
    let req = axum::http::Request::get("/api/v1/domains")
        .header(header::COOKIE, &b.cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(env.send(req).await.status, StatusCode::UNAUTHORIZED);

    let r = env
        .api(
            Method::POST,
            "/api/v1/domains",
            None,
            Some(json!({"name": "x.test"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        env.store
            .domain_detail(&domain("x.test"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_401_names_the_bearer_scheme_and_the_scheme_is_case_insensitive() {
    let env = Env::with_domains().await;
    let admin = env.add_admin("root@admin.test", Scope::All).await;
    let token = env.token(admin).await;
    let call = |authorization: Option<String>| {
        let mut req = axum::http::Request::get("/api/v1/domains");
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        env.send(req.body(axum::body::Body::empty()).expect("request"))
    };
    let challenge = |r: &crate::support::Reply| {
        r.headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    // RFC 6750 §3: no credentials, a bare challenge; a bad token, `invalid_token`.
    for (authorization, expected) in [
        (None, "Bearer"),
        (Some("Basic cm9vdDpwdw==".to_string()), "Bearer"),
        (Some("Bearer ".to_string()), "Bearer"),
        (
            Some("Bearer nope".to_string()),
            "Bearer error=\"invalid_token\"",
        ),
    ] {
        let r = call(authorization.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(challenge(&r), expected, "{authorization:?}");
    }
    // RFC 7235 §2.1: the scheme is a case-insensitive token.
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = call(Some(format!("{scheme} {token}"))).await;
        assert_eq!(r.status, StatusCode::OK, "{scheme}: {}", r.body);
    }
}

#[tokio::test]
async fn domain_crud() {
    let env = Env::with_domains().await;
    let admin = env.add_admin("root@admin.test", Scope::All).await;
    let t = env.token(admin).await;
    let t = Some(t.as_str());

    let r = env
        .api(
            Method::POST,
            "/api/v1/domains",
            t,
            Some(json!({"name": "Api.Test", "quota_bytes": 1000, "max_users": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let d = r.json();
    assert_eq!(d["name"], "api.test");
    assert_eq!(d["quota_bytes"], 1000);
    assert_eq!(d["quota_messages"], Value::Null);
    assert_eq!(d["max_users"], 2);
    assert_eq!(d["users"], 0);
    assert_eq!(d["login_forms"], json!(["at", "percent", "plus", "bare"]));
    assert_eq!(d["enabled"], true);
    assert_eq!(d["aliases"], json!([]));
    for key in ["used_bytes", "used_messages", "allow_apop"] {
        assert!(!d[key].is_null(), "{key}");
    }

    let r = env.api(Method::GET, "/api/v1/domains?q=api", t, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["total"], 1);
    assert_eq!(r.json()["items"][0]["name"], "api.test");
    let r = env.api(Method::GET, "/api/v1/domains", t, None).await;
    assert_eq!(r.json()["total"], 3);

    let r = env
        .api(Method::GET, "/api/v1/domains/api.test", t, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["quota_bytes"], 1000);

    // Absent keeps, null clears.
    let patch =
        json!({"quota_bytes": null, "quota_messages": 50, "login_forms": ["at"], "enabled": false});
    let r = env
        .api(Method::PATCH, "/api/v1/domains/api.test", t, Some(patch))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let d = r.json();
    assert_eq!(d["quota_bytes"], Value::Null);
    assert_eq!(d["quota_messages"], 50);
    assert_eq!(d["max_users"], 2);
    assert_eq!(d["login_forms"], json!(["at"]));
    assert_eq!(d["enabled"], false);
    let r = env
        .api(
            Method::PATCH,
            "/api/v1/domains/api.test",
            t,
            Some(json!({"max_users": null})),
        )
        .await;
    assert_eq!(r.json()["max_users"], Value::Null);
    assert_eq!(r.json()["quota_messages"], 50);

    for (method, path, body) in [
        (
            Method::PATCH,
            "/api/v1/domains/api.test",
            json!({"login_forms": []}),
        ),
        (
            Method::PATCH,
            "/api/v1/domains/api.test",
            json!({"login_forms": ["email"]}),
        ),
        (
            Method::PATCH,
            "/api/v1/domains/api.test",
            json!({"quota_bytes": -1}),
        ),
        (
            Method::PATCH,
            "/api/v1/domains/api.test",
            json!({"colour": "red"}),
        ),
        (
            Method::POST,
            "/api/v1/domains",
            json!({"name": "<b>bad</b>"}),
        ),
        (Method::POST, "/api/v1/domains", json!({"nom": "x.test"})),
    ] {
        let r = env.api(method, path, t, Some(body.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.body
        );
        assert!(r.json()["error"].is_string(), "{}", r.body);
    }
    let r = env
        .api(
            Method::POST,
            "/api/v1/domains",
            t,
            Some(json!({"name": "a.test"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = env
        .api(Method::GET, "/api/v1/domains/none.test", t, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].is_string());

    env.add_user("someone@api.test").await;
    let r = env
        .api(Method::DELETE, "/api/v1/domains/api.test", t, None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = env
        .api(
            Method::DELETE,
            "/api/v1/domains/api.test?force=true",
            t,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        env.store
            .domain_detail(&domain("api.test"))
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
            "domain.delete"
        ]
    );
}

#[tokio::test]
async fn user_crud() {
    let env = Env::with_domains().await;
    let admin = env.add_admin("root@admin.test", Scope::All).await;
    let t = env.token(admin).await;
    let t = Some(t.as_str());

    let body = json!({"local": "Bob", "password": "long enough", "quota_messages": 10});
    let r = env
        .api(Method::POST, "/api/v1/domains/a.test/users", t, Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let u = r.json();
    assert_eq!(u["address"], "bob@a.test");
    assert_eq!(u["local"], "bob");
    assert_eq!(u["domain"], "a.test");
    assert_eq!(u["quota_bytes"], Value::Null);
    assert_eq!(u["quota_messages"], 10);
    assert_eq!(u["enabled"], true);
    assert!(u["created_at"].is_i64());
    assert!(u.get("password").is_none() && u.get("password_hash").is_none());

    for body in [
        json!({"local": "carl", "password": "short"}),
        json!({"local": "a b", "password": "long enough"}),
        json!({"local": "carl"}),
    ] {
        let r = env
            .api(
                Method::POST,
                "/api/v1/domains/a.test/users",
                t,
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.body
        );
    }
    let dup = json!({"local": "bob", "password": "long enough"});
    let r = env
        .api(Method::POST, "/api/v1/domains/a.test/users", t, Some(dup))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = env
        .api(Method::GET, "/api/v1/domains/a.test/users", t, None)
        .await;
    assert_eq!(r.json()["total"], 1);
    assert_eq!(r.json()["items"][0]["address"], "bob@a.test");
    let r = env
        .api(Method::GET, "/api/v1/domains/a.test/users/bob", t, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let patch = json!({"quota_bytes": 5000, "password": "another one"});
    let r = env
        .api(
            Method::PATCH,
            "/api/v1/domains/a.test/users/bob",
            t,
            Some(patch),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["quota_bytes"], 5000);
    assert_eq!(r.json()["quota_messages"], 10, "absent is kept");
    let auth = env
        .store
        .find_user(&crate::support::addr("bob@a.test"))
        .await
        .unwrap()
        .expect("enabled user");
    assert!(tenancy::verify_password(
        b"another one",
        &auth.password_hash
    ));
    let r = env
        .api(
            Method::PATCH,
            "/api/v1/domains/a.test/users/bob",
            t,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["enabled"], false);
    assert_eq!(r.json()["quota_bytes"], 5000);

    let r = env
        .api(
            Method::PATCH,
            "/api/v1/domains/a.test/users/bob",
            t,
            Some(json!({"quota_messages": null, "password": "short"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let u = env.user("bob@a.test").await.unwrap();
    assert_eq!(
        u.quota.messages,
        Some(10),
        "nothing changes when any field is bad"
    );

    let r = env
        .api(Method::DELETE, "/api/v1/domains/a.test/users/bob", t, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = env
        .api(Method::GET, "/api/v1/domains/a.test/users/bob", t, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    assert_eq!(
        env.audit_actions().await,
        [
            "user.create",
            "user.update",
            "user.password",
            "user.disable",
            "user.delete"
        ]
    );
}

#[tokio::test]
async fn a_domain_admin_token_reaches_its_domain_only() {
    let env = Env::with_domains().await;
    env.add_user("other@b.test").await;
    let admin = env
        .add_admin("tenant@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let t = env.token(admin).await;
    let t = Some(t.as_str());

    let r = env.api(Method::GET, "/api/v1/domains", t, None).await;
    assert_eq!(r.json()["total"], 1);
    assert_eq!(r.json()["items"][0]["name"], "a.test");

    for (method, path, body) in [
        (Method::GET, "/api/v1/domains/b.test", None),
        (
            Method::PATCH,
            "/api/v1/domains/b.test",
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, "/api/v1/domains/b.test", None),
        (Method::GET, "/api/v1/domains/b.test/users", None),
        (
            Method::POST,
            "/api/v1/domains/b.test/users",
            Some(json!({"local": "evil", "password": "long enough"})),
        ),
        (Method::GET, "/api/v1/domains/b.test/users/other", None),
        (
            Method::PATCH,
            "/api/v1/domains/b.test/users/other",
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, "/api/v1/domains/b.test/users/other", None),
        (Method::DELETE, "/api/v1/sessions/other@b.test", None),
    ] {
        let r = env.api(method.clone(), path, t, body).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            r.body
        );
    }
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/domains",
            Some(json!({"name": "mine.test"})),
        ),
        (
            Method::PATCH,
            "/api/v1/domains/a.test",
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, "/api/v1/domains/a.test", None),
    ] {
        let r = env.api(method.clone(), path, t, body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            r.body
        );
    }
    let body = json!({"local": "mine", "password": "long enough"});
    let r = env
        .api(Method::POST, "/api/v1/domains/a.test/users", t, Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(env.user("other@b.test").await.unwrap().enabled);
    assert!(env.user("evil@b.test").await.is_none());
}

#[tokio::test]
async fn sessions_are_listed_in_scope_and_ended() {
    let env = Env::with_domains().await;
    env.add_user("bob@a.test").await;
    env.add_user("eve@b.test").await;
    for address in ["bob@a.test", "eve@b.test"] {
        let id = env
            .store
            .find_user(&crate::support::addr(address))
            .await
            .unwrap()
            .unwrap()
            .id;
        env.store.lock(id).await.expect("lock");
    }
    let root = env.add_admin("root@admin.test", Scope::All).await;
    let root = env.token(root).await;
    let tenant = env
        .add_admin("tenant@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let tenant = env.token(tenant).await;

    let r = env
        .api(Method::GET, "/api/v1/sessions", Some(&root), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
    let r = env
        .api(Method::GET, "/api/v1/sessions", Some(&tenant), None)
        .await;
    let list = r.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["address"], "bob@a.test");
    assert!(list[0]["node"].is_string() && list[0]["since"].is_i64());

    let r = env
        .api(
            Method::DELETE,
            "/api/v1/sessions/eve@b.test",
            Some(&tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = env
        .api(
            Method::DELETE,
            "/api/v1/sessions/bob@a.test",
            Some(&tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = env
        .api(Method::GET, "/api/v1/sessions", Some(&tenant), None)
        .await;
    assert_eq!(r.json(), json!([]));
    let r = env
        .api(
            Method::DELETE,
            "/api/v1/sessions/bob@a.test",
            Some(&tenant),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "not locked any more");
    assert_eq!(env.audit_actions().await, ["session.end"]);
}

/// The routes the API serves, as (method, path under /api/v1).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/domains/{domain}/users/import"),
    ("get", "/domains"),
    ("post", "/domains"),
    ("get", "/domains/{domain}"),
    ("patch", "/domains/{domain}"),
    ("delete", "/domains/{domain}"),
    ("get", "/domains/{domain}/policies"),
    ("patch", "/domains/{domain}/policies"),
    ("get", "/domains/{domain}/oauth"),
    ("put", "/domains/{domain}/oauth"),
    ("delete", "/domains/{domain}/oauth"),
    ("get", "/domains/{domain}/users"),
    ("post", "/domains/{domain}/users"),
    ("get", "/domains/{domain}/users/{local}"),
    ("patch", "/domains/{domain}/users/{local}"),
    ("delete", "/domains/{domain}/users/{local}"),
    ("get", "/domains/{domain}/users/{local}/activity"),
    ("get", "/domains/{domain}/users/{local}/trace"),
    ("post", "/domains/{domain}/users/{local}/trace"),
    ("delete", "/domains/{domain}/users/{local}/trace"),
    ("get", "/domains/{domain}/users/{local}/bin"),
    ("post", "/domains/{domain}/users/{local}/bin/restore"),
    ("post", "/domains/{domain}/users/{local}/bin/purge"),
    ("get", "/domains/{domain}/users/{local}/app-passwords"),
    ("post", "/domains/{domain}/users/{local}/app-passwords"),
    (
        "delete",
        "/domains/{domain}/users/{local}/app-passwords/{label}",
    ),
    ("get", "/alarms"),
    ("get", "/domains/{domain}/users/{local}/alarms"),
    ("get", "/bulletins"),
    ("post", "/bulletins"),
    ("get", "/sessions"),
    ("delete", "/sessions/{address}"),
    ("get", "/admins"),
    ("post", "/admins"),
    ("get", "/admins/{email}"),
    ("patch", "/admins/{email}"),
    ("delete", "/admins/{email}"),
];

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_served_routes() {
    let env = Env::with_domains().await;
    let r = env
        .api(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let methods = [
        "get", "post", "put", "patch", "delete", "head", "options", "trace",
    ];
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (key, op) in item.as_object().expect("path item") {
            if methods.contains(&key.as_str()) {
                assert!(op["responses"].is_object(), "{key} {path}");
                documented.insert((key.clone(), path.clone()));
            }
        }
    }
    let expected: BTreeSet<_> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);

    // Every `$ref` names a schema that exists.
    let text = doc.to_string();
    for piece in text.split("\"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(doc["components"]["schemas"][name].is_object(), "{name}");
    }

    // Every documented route is served: a handler answers (JSON), not the router's 404 page or
    // a 405. A domain that does not exist keeps this from changing anything.
    let admin = env.add_admin("root@admin.test", Scope::All).await;
    let t = env.token(admin).await;
    for (method, path) in ROUTES {
        let uri = format!(
            "/api/v1{}",
            path.replace("{domain}", "none.test")
                .replace("{local}", "nobody")
                .replace("{address}", "nobody@none.test")
        );
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = env
            .api(method.clone(), &uri, Some(&t), Some(json!({})))
            .await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        let json_reply = r
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        assert!(json_reply, "{method} {uri}: {} {}", r.status, r.body);
    }
}

#[tokio::test]
async fn limits_read_the_same_in_a_form_and_the_api() {
    let env = Env::with_domains().await;
    let admin = env.add_admin("root@admin.test", Scope::All).await;
    let t = env.token(admin).await;
    let b = env.sign_in(admin).await;
    env.add_user("form@a.test").await;
    env.add_user("api@a.test").await;
    let quota = |bytes, messages| mailstore::Quota { bytes, messages };
    for (bytes, messages, want) in [
        ("10K", "10K", quota(Some(10 << 10), Some(10_000))),
        ("500m", "2M", quota(Some(500 << 20), Some(2_000_000))),
        (" 1 G ", "unlimited", quota(Some(1 << 30), None)),
        ("Unlimited", "", quota(None, None)),
    ] {
        let r = env
            .post(
                &b,
                "/domains/a.test/users/form",
                &[("quota_bytes", bytes), ("quota_messages", messages)],
            )
            .await;
        r.assert_redirect("/domains/a.test/users/form");
        let body = json!({"quota_bytes": bytes, "quota_messages": messages});
        let r = env
            .api(
                Method::PATCH,
                "/api/v1/domains/a.test/users/api",
                Some(&t),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{body}: {}", r.body);
        for user in ["form@a.test", "api@a.test"] {
            let stored = env.user(user).await.expect("user").quota;
            assert_eq!(stored, want, "{user}: {body}");
        }
    }
    // A domain's limits too, on creation and on change; users count in thousands.
    let body = json!({"name": "t.test", "quota_bytes": "1G", "max_users": "2K"});
    let r = env
        .api(Method::POST, "/api/v1/domains", Some(&t), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.json()["quota_bytes"], 1u64 << 30);
    assert_eq!(r.json()["max_users"], 2000);
    let body = json!({"quota_messages": "5k", "max_users": "unlimited"});
    let r = env
        .api(
            Method::PATCH,
            "/api/v1/domains/t.test",
            Some(&t),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["quota_messages"], 5000);
    assert_eq!(r.json()["max_users"], Value::Null);
    assert_eq!(r.json()["quota_bytes"], 1u64 << 30, "absent is kept");
    // What the form refuses, the API refuses, with the same sentence.
    let form = env
        .post(
            &b,
            "/domains/a.test/users/form",
            &[("quota_bytes", "5T"), ("quota_messages", "")],
        )
        .await;
    assert_eq!(form.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = env
        .api(
            Method::PATCH,
            "/api/v1/domains/a.test/users/api",
            Some(&t),
            Some(json!({"quota_bytes": "5T"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let sentence = r.json()["error"].as_str().expect("error").to_string();
    assert!(sentence.contains("K, M or G"), "{sentence}");
    assert!(
        form.body
            .contains(&sentence.replace('"', "&#34;").replace('\'', "&#39;")),
        "the form says it differently: {}",
        form.body
    );
}

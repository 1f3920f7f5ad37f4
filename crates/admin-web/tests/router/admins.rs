//! Admin accounts (issue 20, item 1): the admins page and `/api/v1/admins`, sessions and tokens
//! ended by a password change, disabling and removal, the last super admin, "My account", and
//! API tokens that expire or may only read.

use std::net::SocketAddr;

use admin_web::ClientAddr;
use admin_web::auth::hash_secret;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use mailstore::{Admin, AdminId, NewApiToken, Scope};
use serde_json::json;

use crate::support::{Browser, Env, Reply, domain, field_error, now};

/// The password `Env::add_admin` gives every admin.
const OLD: &str = "admin password";
const NEW: &str = "a new password 1";
const ANNA: &str = "anna@isp.example";
const ANNA_HREF: &str = "/admins/anna%40isp.example";

/// A super admin (root@admin.test) signed in, and the environment with a.test and b.test.
async fn setup() -> (Env, Browser, AdminId) {
    let env = Env::with_domains().await;
    let root = env.add_admin("root@admin.test", Scope::All).await;
    let b = env.sign_in(root).await;
    (env, b, root)
}

async fn anna(env: &Env, scope: Scope) -> (AdminId, Browser, String) {
    let id = env.add_admin(ANNA, scope).await;
    let browser = env.sign_in(id).await;
    let token = env.token(id).await;
    (id, browser, token)
}

fn a_test() -> Scope {
    Scope::Domains(vec![domain("a.test")])
}

/// Posts the sign-in form from 192.0.2.9.
async fn sign_in_form(env: &Env, email: &str, password: &str) -> Reply {
    const PRE: &str = "pre-token";
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("email", email)
        .append_pair("password", password)
        .append_pair("_pre", PRE)
        .finish();
    let mut req = Request::post("/signin")
        .header(header::COOKIE, format!("__Host-pophost-pre={PRE}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request");
    let peer: SocketAddr = "192.0.2.9:50000".parse().expect("peer");
    req.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
    env.send(req).await
}

async fn password_is(env: &Env, email: &str, password: &str) -> bool {
    let a = env.store.find_admin(email).await.unwrap().expect("admin");
    tenancy::verify_password(password.as_bytes(), &a.password_hash)
}

/// Whether `b` is still signed in (`/` answers 200 rather than a redirect to sign-in).
async fn signed_in(env: &Env, b: &Browser) -> bool {
    let r = env.get(b, "/").await;
    match r.status {
        StatusCode::OK => true,
        StatusCode::SEE_OTHER => {
            assert_eq!(r.location(), "/signin");
            false
        }
        other => panic!("unexpected {other}"),
    }
}

async fn call(
    env: &Env,
    token: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Reply {
    env.api(method, path, Some(token), body).await
}

async fn token_works(env: &Env, token: &str) -> StatusCode {
    env.api(Method::GET, "/api/v1/domains", Some(token), None)
        .await
        .status
}

#[tokio::test]
async fn a_super_admin_adds_lists_rescopes_and_removes_admins() {
    let (env, b, _) = setup().await;
    let page = env.get(&b, "/admins").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"<table id="admins">"#));
    assert!(page.body.contains(r#"<form id="admin-form""#));
    assert!(page.body.contains(r#"id="nav-admins""#));

    // Errors sit under their fields and keep what was typed.
    let short = env
        .post(
            &b,
            "/admins",
            &[
                ("email", ANNA),
                ("password", "short"),
                ("role", "domains"),
                ("domains", "a.test"),
            ],
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_error(&short.body, "password").as_deref(),
        Some("use a password of at least 12 characters")
    );
    assert!(short.body.contains(&format!(r#"value="{ANNA}""#)));
    let nowhere = env
        .post(
            &b,
            "/admins",
            &[
                ("email", ANNA),
                ("password", NEW),
                ("role", "domains"),
                ("domains", "nowhere.test"),
            ],
        )
        .await;
    assert_eq!(nowhere.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_error(&nowhere.body, "domains").as_deref(),
        Some("No domain nowhere.test.")
    );
    let none = env
        .post(
            &b,
            "/admins",
            &[("email", ANNA), ("password", NEW), ("role", "domains")],
        )
        .await;
    assert!(field_error(&none.body, "domains").is_some_and(|e| e.contains("at least one domain")));
    assert!(env.store.find_admin(ANNA).await.unwrap().is_none());

    let added = env
        .post(
            &b,
            "/admins",
            &[
                ("email", "Anna@ISP.example"),
                ("password", NEW),
                ("role", "domains"),
                ("domains", "b.test, a.test"),
            ],
        )
        .await;
    added.assert_redirect("/admins");
    let list = env.follow(&b, &added).await;
    assert!(
        list.body
            .contains("Added anna@isp.example as admin of a.test, b.test"),
        "{}",
        list.body
    );
    assert!(
        list.body
            .contains(&format!(r#"<a href="{ANNA_HREF}">{ANNA}</a>"#))
    );
    assert!(
        list.body
            .contains("<td>domain admin</td><td>a.test, b.test</td><td>never</td><td>0</td>")
    );
    assert!(password_is(&env, ANNA, NEW).await);
    let dup = env
        .post(
            &b,
            "/admins",
            &[("email", ANNA), ("password", NEW), ("role", "super")],
        )
        .await;
    assert_eq!(
        field_error(&dup.body, "email").as_deref(),
        Some("admin anna@isp.example already exists")
    );

    // Her page, and a new scope.
    let edit = env.get(&b, ANNA_HREF).await;
    assert_eq!(edit.status, StatusCode::OK);
    assert!(edit.body.contains(r#"value="a.test, b.test""#));
    let scoped = env
        .post(
            &b,
            &format!("{ANNA_HREF}/scope"),
            &[("role", "domains"), ("domains", "b.test")],
        )
        .await;
    scoped.assert_redirect(ANNA_HREF);
    assert!(
        env.follow(&b, &scoped)
            .await
            .body
            .contains("anna@isp.example is now admin of b.test")
    );
    let a = env.store.find_admin(ANNA).await.unwrap().expect("anna");
    assert_eq!(a.scope, Scope::Domains(vec![domain("b.test")]));
    let sup = env
        .post(
            &b,
            &format!("{ANNA_HREF}/scope"),
            &[("role", "super"), ("domains", "")],
        )
        .await;
    sup.assert_redirect(ANNA_HREF);
    assert!(
        env.store
            .find_admin(ANNA)
            .await
            .unwrap()
            .expect("anna")
            .scope
            .is_all()
    );

    // Removal asks first.
    let confirm = env.get(&b, &format!("{ANNA_HREF}/remove")).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm
            .body
            .contains("Remove the admin account anna@isp.example (super admin)?")
    );
    assert!(
        confirm
            .body
            .contains(&format!(r#"action="{ANNA_HREF}/remove""#))
    );
    let removed = env.post(&b, &format!("{ANNA_HREF}/remove"), &[]).await;
    removed.assert_redirect("/admins");
    assert!(
        env.follow(&b, &removed)
            .await
            .body
            .contains("Admin anna@isp.example removed")
    );
    assert!(env.store.find_admin(ANNA).await.unwrap().is_none());
    assert_eq!(env.get(&b, ANNA_HREF).await.status, StatusCode::NOT_FOUND);

    let actions = env.audit_actions().await;
    for a in ["admin.create", "admin.scope", "admin.remove"] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
}

#[tokio::test]
async fn a_password_reset_ends_sessions_and_revokes_tokens_at_once() {
    let (env, b, _) = setup().await;
    let (_, anna_b, token) = anna(&env, a_test()).await;
    let other = env
        .sign_in(env.store.find_admin(ANNA).await.unwrap().unwrap().id)
        .await;
    assert!(signed_in(&env, &anna_b).await);
    assert_eq!(token_works(&env, &token).await, StatusCode::OK);

    let short = env
        .post(
            &b,
            &format!("{ANNA_HREF}/password"),
            &[("password", "short")],
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&short.body, "password").is_some());
    assert!(
        signed_in(&env, &anna_b).await,
        "a refused change ends nothing"
    );

    let reply = env
        .post(&b, &format!("{ANNA_HREF}/password"), &[("password", NEW)])
        .await;
    reply.assert_redirect(ANNA_HREF);
    let shown = env.follow(&b, &reply).await;
    assert!(
        shown
            .body
            .contains("Password of anna@isp.example changed; their sessions and API tokens ended"),
        "{}",
        shown.body
    );
    assert!(
        !signed_in(&env, &anna_b).await,
        "the old cookie goes to sign-in"
    );
    assert!(!signed_in(&env, &other).await);
    assert_eq!(token_works(&env, &token).await, StatusCode::UNAUTHORIZED);
    assert!(password_is(&env, ANNA, NEW).await);
    assert!(
        signed_in(&env, &b).await,
        "the super admin's own session lives on"
    );
    assert!(
        env.audit_actions()
            .await
            .contains(&"admin.password".to_string())
    );
}

#[tokio::test]
async fn a_disabled_admin_cannot_sign_in_or_use_tokens_until_enabled() {
    let (env, b, _) = setup().await;
    let (_, anna_b, token) = anna(&env, a_test()).await;
    let reply = env.post(&b, &format!("{ANNA_HREF}/disable"), &[]).await;
    reply.assert_redirect(ANNA_HREF);
    let shown = env.follow(&b, &reply).await;
    assert!(
        shown
            .body
            .contains("anna@isp.example disabled; their sessions and API tokens ended")
    );
    assert!(
        shown
            .body
            .contains("Disabled: cannot sign in or use tokens.")
    );
    assert!(!signed_in(&env, &anna_b).await);
    assert_eq!(token_works(&env, &token).await, StatusCode::UNAUTHORIZED);

    let refused = sign_in_form(&env, ANNA, OLD).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("This admin account is disabled."));
    assert!(refused.headers.get(header::SET_COOKIE).is_none_or(|c| {
        !c.to_str()
            .unwrap_or("")
            .starts_with("__Host-pophost-session")
    }));
    let wrong = sign_in_form(&env, ANNA, "wrong password").await;
    assert_eq!(
        wrong.status,
        StatusCode::UNAUTHORIZED,
        "a guesser learns nothing"
    );
    assert!(!wrong.body.contains("disabled"));

    let enabled = env.post(&b, &format!("{ANNA_HREF}/enable"), &[]).await;
    assert!(
        env.follow(&b, &enabled)
            .await
            .body
            .contains("anna@isp.example enabled")
    );
    let ok = sign_in_form(&env, ANNA, OLD).await;
    ok.assert_redirect("/");
    let a = env.store.find_admin(ANNA).await.unwrap().expect("anna");
    assert_eq!(a.last_signin_ip.as_deref(), Some("192.0.2.9"));
    assert!(a.last_signin_at.is_some());
    let list = env.get(&b, "/admins").await;
    assert!(list.body.contains(" from 192.0.2.9</td>"), "{}", list.body);

    let actions = env.audit_actions().await;
    for a in ["admin.disable", "admin.enable"] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
}

#[tokio::test]
async fn a_domain_admin_gets_403_on_admins_and_sees_no_link() {
    let (env, _, _) = setup().await;
    let (id, anna_b, token) = anna(&env, a_test()).await;
    let home = env.get(&anna_b, "/").await;
    assert!(!home.body.contains(r#"id="nav-admins""#));
    assert!(home.body.contains(r#"id="nav-account""#));
    for path in [
        "/admins",
        "/admins/root%40admin.test",
        "/admins/root%40admin.test/remove",
    ] {
        assert_eq!(
            env.get(&anna_b, path).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    for path in [
        "/admins",
        "/admins/root%40admin.test/password",
        "/admins/root%40admin.test/disable",
    ] {
        let r = env
            .post(
                &anna_b,
                path,
                &[("email", "x@y.test"), ("password", NEW), ("role", "super")],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert!(password_is(&env, "root@admin.test", OLD).await);
    assert_eq!(
        call(&env, &token, Method::GET, "/api/v1/admins", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(
            &env,
            &token,
            Method::POST,
            "/api/v1/admins",
            Some(json!({"email": "x@y.test", "password": NEW, "super_admin": true}))
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(
            &env,
            &token,
            Method::DELETE,
            "/api/v1/admins/root@admin.test",
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert!(env.store.find_admin("x@y.test").await.unwrap().is_none());
    assert!(env.store.admin_by_id(id).await.unwrap().is_some());
}

#[tokio::test]
async fn the_last_super_admin_stays_and_says_so() {
    let (env, b, root) = setup().await;
    let root_href = "/admins/root%40admin.test";
    let demote = env
        .post(
            &b,
            &format!("{root_href}/scope"),
            &[("role", "domains"), ("domains", "a.test")],
        )
        .await;
    assert_eq!(demote.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_error(&demote.body, "domains").as_deref(),
        Some(
            "root@admin.test is the last enabled super admin: make another admin super admin first"
        )
    );
    let removed = env.post(&b, &format!("{root_href}/remove"), &[]).await;
    removed.assert_redirect(root_href);
    assert!(
        env.follow(&b, &removed)
            .await
            .body
            .contains("You cannot remove your own account; another super admin can.")
    );
    let token = env.token(root).await;
    let del = env
        .api(
            Method::DELETE,
            "/api/v1/admins/root@admin.test",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::UNPROCESSABLE_ENTITY);
    let patch = env
        .api(
            Method::PATCH,
            "/api/v1/admins/root@admin.test",
            Some(&token),
            Some(json!({"super_admin": false, "domains": ["a.test"]})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::CONFLICT);
    assert!(
        patch.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("last enabled super admin")
    );
    assert!(
        env.store
            .admin_by_id(root)
            .await
            .unwrap()
            .expect("root")
            .scope
            .is_all()
    );
}

#[tokio::test]
async fn my_account_changes_the_password_with_the_current_one_and_shows_sign_ins() {
    let (env, _, _) = setup().await;
    let id = env.add_admin(ANNA, a_test()).await;
    sign_in_form(&env, ANNA, "wrong password").await;
    let signed = sign_in_form(&env, ANNA, OLD).await;
    signed.assert_redirect("/");
    let b = env.sign_in(id).await;
    let elsewhere = env.sign_in(id).await;
    let token = env.token(id).await;

    let page = env.get(&b, "/account").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"<table id="signins">"#));
    let signed_in_row = page.body.find("<td>192.0.2.9</td><td>signed in</td>");
    let failed_row = page
        .body
        .find(r#"<td>192.0.2.9</td><td><span class="error">failed</span></td>"#);
    assert!(
        signed_in_row.is_some() && failed_row.is_some() && signed_in_row < failed_row,
        "newest first: {}",
        page.body
    );

    let wrong = env
        .post(
            &b,
            "/account/password",
            &[("current", "not it at all"), ("password", NEW)],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_error(&wrong.body, "current").as_deref(),
        Some("That is not your current password.")
    );
    let short = env
        .post(
            &b,
            "/account/password",
            &[("current", OLD), ("password", "short")],
        )
        .await;
    assert!(field_error(&short.body, "password").is_some());
    assert!(password_is(&env, ANNA, OLD).await);

    let done = env
        .post(
            &b,
            "/account/password",
            &[("current", OLD), ("password", NEW)],
        )
        .await;
    done.assert_redirect("/account");
    let shown = env.follow(&b, &done).await;
    assert_eq!(shown.status, StatusCode::OK, "this browser stays signed in");
    assert!(shown.body.contains("Your password was changed"));
    assert!(password_is(&env, ANNA, NEW).await);
    assert!(!signed_in(&env, &elsewhere).await, "other sessions end");
    assert_eq!(token_works(&env, &token).await, StatusCode::UNAUTHORIZED);
    // A super admin's own page sends them here instead of resetting without the current one.
    let root = env
        .store
        .find_admin("root@admin.test")
        .await
        .unwrap()
        .unwrap();
    let rb = env.sign_in(root.id).await;
    let own = env
        .post(
            &rb,
            "/admins/root%40admin.test/password",
            &[("password", NEW)],
        )
        .await;
    assert_eq!(own.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(password_is(&env, "root@admin.test", OLD).await);
}

async fn store_token(
    env: &Env,
    admin: AdminId,
    expires_at: Option<i64>,
    read_only: bool,
) -> String {
    let secret = admin_web::auth::random_token();
    let token = NewApiToken {
        name: "t",
        token_hash: &hash_secret(&secret),
        expires_at,
        read_only,
    };
    env.store
        .create_api_token(admin, &token, now())
        .await
        .expect("token");
    secret
}

#[tokio::test]
async fn tokens_expire_and_read_only_tokens_only_read() {
    let (env, b, root) = setup().await;
    let expired = store_token(&env, root, Some(now() - 1), false).await;
    assert_eq!(token_works(&env, &expired).await, StatusCode::UNAUTHORIZED);
    let live = store_token(&env, root, Some(now() + 60_000), false).await;
    assert_eq!(token_works(&env, &live).await, StatusCode::OK);

    // Made on the page: 30 days, read-only.
    let made = env
        .post(
            &b,
            "/tokens",
            &[("name", "monitoring"), ("days", "30"), ("read_only", "on")],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK);
    let at = made.body.find(r#"id="new-token">"#).expect("secret shown") + 15;
    let secret: String = made.body[at..].chars().take_while(|c| *c != '<').collect();
    assert!(made.body.contains("<td>monitoring</td><td>read-only</td>"));
    let tokens = env.store.list_api_tokens(root).await.unwrap();
    let t = tokens
        .iter()
        .find(|t| t.name == "monitoring")
        .expect("listed");
    assert!(t.read_only);
    let days = (t.expires_at.expect("expires") - t.created_at) / 86_400_000;
    assert_eq!(days, 30);

    assert_eq!(token_works(&env, &secret).await, StatusCode::OK);
    let post = env
        .api(
            Method::POST,
            "/api/v1/domains",
            Some(&secret),
            Some(json!({"name": "c.test"})),
        )
        .await;
    assert_eq!(post.status, StatusCode::FORBIDDEN);
    assert_eq!(post.json()["error"], "this API token is read-only");
    let delete = env
        .api(
            Method::DELETE,
            "/api/v1/domains/a.test",
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    assert!(
        env.store
            .domain_detail(&domain("a.test"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        env.store
            .domain_detail(&domain("c.test"))
            .await
            .unwrap()
            .is_none()
    );

    let bad = env
        .post(&b, "/tokens", &[("name", "x"), ("days", "7")])
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&bad.body, "days").is_some());
    let never = env
        .post(&b, "/tokens", &[("name", "forever"), ("days", "0")])
        .await;
    assert!(
        never
            .body
            .contains("<td>forever</td><td>read and write</td>")
    );

    // Revoking asks first, then says so.
    let confirm = env.get(&b, &format!("/tokens/{}/revoke", t.id)).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm
            .body
            .contains(r#"Revoke the API token &#34;monitoring&#34;?"#),
        "{}",
        confirm.body
    );
    let revoked = env.post(&b, &format!("/tokens/{}/revoke", t.id), &[]).await;
    revoked.assert_redirect("/tokens");
    assert!(
        env.follow(&b, &revoked)
            .await
            .body
            .contains("API token monitoring revoked")
    );
    assert_eq!(token_works(&env, &secret).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_admins_api_lists_creates_changes_and_removes() {
    let (env, _, root) = setup().await;
    let token = env.token(root).await;
    let created = call(
        &env,
        &token,
        Method::POST,
        "/api/v1/admins",
        Some(json!({"email": ANNA, "password": NEW, "domains": ["a.test"]})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.json(),
        json!({"email": ANNA, "super_admin": false, "domains": ["a.test"], "disabled": false,
               "last_signin_at": null, "last_signin_ip": null, "tokens": 0})
    );
    let short = call(
        &env,
        &token,
        Method::POST,
        "/api/v1/admins",
        Some(json!({"email": "b@isp.example", "password": "short", "super_admin": true})),
    )
    .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    let list = call(&env, &token, Method::GET, "/api/v1/admins", None).await;
    assert_eq!(list.json()["total"], 2);
    assert_eq!(list.json()["items"][0]["email"], ANNA);

    let anna_id = env.store.find_admin(ANNA).await.unwrap().unwrap().id;
    let anna_token = env.token(anna_id).await;
    let patched = call(
        &env,
        &token,
        Method::PATCH,
        &format!("/api/v1/admins/{ANNA}"),
        Some(json!({"domains": ["a.test", "b.test"], "password": NEW.to_string() + "x"})),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.json()["domains"], json!(["a.test", "b.test"]));
    assert_eq!(
        patched.json()["tokens"],
        0,
        "the password change revoked her token"
    );
    assert_eq!(
        token_works(&env, &anna_token).await,
        StatusCode::UNAUTHORIZED
    );
    let disabled = call(
        &env,
        &token,
        Method::PATCH,
        &format!("/api/v1/admins/{ANNA}"),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(disabled.json()["disabled"], true);
    assert_eq!(
        call(
            &env,
            &token,
            Method::GET,
            &format!("/api/v1/admins/{ANNA}"),
            None
        )
        .await
        .json()["disabled"],
        true
    );
    assert_eq!(
        call(
            &env,
            &token,
            Method::DELETE,
            &format!("/api/v1/admins/{ANNA}"),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(
            &env,
            &token,
            Method::GET,
            &format!("/api/v1/admins/{ANNA}"),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let doc = env
        .api(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .json();
    assert!(doc["paths"]["/admins/{email}"]["patch"].is_object());
}

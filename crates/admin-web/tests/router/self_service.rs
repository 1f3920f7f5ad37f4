//! The users' self-service page (`/me`): sign-in only where the domain has it on (and then
//! failing exactly like a wrong password), the admin sign-in's throttle and CSRF rules, a
//! session that never crosses with an admin's either way, a password change after which only
//! the new password signs in, and a recycle bin that restores the user's own mail only.

use std::net::SocketAddr;

use admin_web::ClientAddr;
use admin_web::auth::{SESSION_COOKIE, hash_secret};
use admin_web::pages::me::ME_COOKIE;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use mailstore::{Admin, Directory, Scope, SelfService};

use crate::bin::{bin_ids, deliver_and_delete};
use crate::support::{Browser, Env, Reply, addr, domain};

const PRE: &str = "pre-token-of-this-browser";
const PASSWORD: &str = "john's main password";
const WRONG_ANSWER: &str = "Wrong e-mail address or password.";

async fn set_password(env: &Env, address: &str, password: &str) {
    let secrets = tenancy::Secrets::derive(password.as_bytes()).expect("hash");
    env.store
        .set_password(&addr(address), &secrets.hash, Some(&secrets.verifier))
        .await
        .expect("set password");
}

/// `a.test` with the page on and `b.test` with it off; john@a.test and eve@b.test with
/// passwords.
async fn env() -> Env {
    let env = Env::with_domains().await;
    for user in ["john@a.test", "eve@b.test"] {
        env.add_user(user).await;
        set_password(&env, user, PASSWORD).await;
    }
    env.store
        .set_self_service(&domain("a.test"), true)
        .await
        .expect("self service on");
    env
}

/// Posts the sign-in form from `peer`.
async fn sign_in_from(env: &Env, peer: &str, login: &str, password: &str) -> Reply {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("email", login)
        .append_pair("password", password)
        .append_pair("_pre", PRE)
        .finish();
    let mut req = Request::post("/me/signin")
        .header(header::COOKIE, format!("__Host-pophost-me-pre={PRE}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request");
    let peer = SocketAddr::new(peer.parse().expect("peer"), 50_000);
    req.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
    env.send(req).await
}

async fn sign_in(env: &Env, login: &str, password: &str) -> Reply {
    sign_in_from(env, "192.0.2.1", login, password).await
}

/// The user browser a successful sign-in makes: its cookie, and its session's CSRF token.
async fn browser(env: &Env, reply: &Reply) -> Browser {
    reply.assert_redirect("/me");
    browser_of(env, reply).await
}

/// The user browser of the session cookie `reply` sets.
async fn browser_of(env: &Env, reply: &Reply) -> Browser {
    let id = reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{ME_COOKIE}=")))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let session = env
        .store
        .user_session(&hash_secret(&id))
        .await
        .expect("session")
        .expect("stored");
    Browser {
        cookie: format!("{ME_COOKIE}={id}"),
        csrf: session.csrf,
    }
}

async fn signed_in(env: &Env) -> Browser {
    let reply = sign_in(env, "john@a.test", PASSWORD).await;
    browser(env, &reply).await
}

fn error_line(body: &str) -> Option<&str> {
    let start = body.find("id=\"signin-error\">")? + "id=\"signin-error\">".len();
    Some(&body[start..start + body[start..].find('<')?])
}

#[tokio::test]
async fn signin_is_refused_like_a_wrong_password_where_the_domain_has_the_page_off() {
    let env = env().await;
    let off = sign_in(&env, "eve@b.test", PASSWORD).await;
    let wrong = sign_in(&env, "john@a.test", "not the password").await;
    let nobody = sign_in(&env, "nobody@a.test", PASSWORD).await;
    for r in [&off, &wrong, &nobody] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        assert_eq!(error_line(&r.body), Some(WRONG_ANSWER));
        assert!(
            r.headers.get_all(header::SET_COOKIE).iter().all(|c| !c
                .to_str()
                .unwrap_or("")
                .starts_with(&format!("{ME_COOKIE}="))),
            "no session cookie"
        );
    }
    // Turned on, the same password signs in; and any login form the domain accepts works.
    env.store
        .set_self_service(&domain("b.test"), true)
        .await
        .expect("on");
    browser(&env, &sign_in(&env, "eve@b.test", PASSWORD).await).await;
    browser(&env, &sign_in(&env, "eve%b.test", PASSWORD).await).await;
    // A disabled user is refused the same way.
    env.store
        .set_user_enabled(&addr("eve@b.test"), false)
        .await
        .expect("disable");
    let disabled = sign_in(&env, "eve@b.test", PASSWORD).await;
    assert_eq!(disabled.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_line(&disabled.body), Some(WRONG_ANSWER));
    // Attempts are audited under the user, in their domain.
    let page = env
        .store
        .audit_page(&Scope::All, &Default::default(), 0, 100)
        .await
        .expect("audit");
    assert!(page.items.iter().any(|e| e.actor == "user:eve@b.test"
        && e.object == "self-service"
        && e.action == "signin"
        && !e.success
        && e.domain == Some(domain("b.test"))));
}

#[tokio::test]
async fn turning_the_page_off_ends_the_sessions_at_once() {
    let env = env().await;
    let john = signed_in(&env).await;
    assert_eq!(env.get(&john, "/me").await.status, StatusCode::OK);
    env.store
        .set_self_service(&domain("a.test"), false)
        .await
        .expect("off");
    env.get(&john, "/me").await.assert_redirect("/me/signin");
}

#[tokio::test]
async fn wrong_passwords_are_throttled_per_address_and_account() {
    let env = env().await;
    // `WebConfig::default().signin_failures` is 5.
    for _ in 0..5 {
        let r = sign_in_from(&env, "198.51.100.7", "john@a.test", "guess").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // The right password is refused from there now, without being checked.
    let r = sign_in_from(&env, "198.51.100.7", "john@a.test", PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    // Another form of the same login counts against the same account.
    let r = sign_in_from(&env, "198.51.100.7", "JOHN%a.test", PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // John elsewhere is not locked out by it.
    browser(
        &env,
        &sign_in_from(&env, "203.0.113.9", "john@a.test", PASSWORD).await,
    )
    .await;
}

#[tokio::test]
async fn csrf_tokens_and_origin_are_required() {
    let env = env().await;
    // The sign-in form without its double-submit cookie.
    let req = Request::post("/me/signin")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "email=john%40a.test&password={}&_pre={PRE}",
            PASSWORD.replace(' ', "+").replace('\'', "%27")
        )))
        .expect("request");
    assert_eq!(env.send(req).await.status, StatusCode::FORBIDDEN);

    let john = signed_in(&env).await;
    let change = [
        ("current", PASSWORD),
        ("password", "a brand new password"),
        ("confirm", "a brand new password"),
    ];
    for csrf in ["", "forged"] {
        let forged = Browser {
            csrf: csrf.into(),
            ..john.clone()
        };
        let r = env.post(&forged, "/me/password", &change).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    // The right token from a foreign origin.
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("_csrf", &john.csrf);
    for (k, v) in change {
        form.append_pair(k, v);
    }
    let req = Request::post("/me/password")
        .header(header::COOKIE, &john.cookie)
        .header(header::ORIGIN, "https://evil.example")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.finish()))
        .expect("request");
    assert_eq!(env.send(req).await.status, StatusCode::FORBIDDEN);
    // None of it changed the password.
    browser(&env, &sign_in(&env, "john@a.test", PASSWORD).await).await;
}

#[tokio::test]
async fn user_and_admin_sessions_never_cross() {
    let env = env().await;
    let john = signed_in(&env).await;
    // A user session is no admin session: every admin page sends it to the admin sign-in.
    for path in ["/", "/domains", "/domains/a.test/users/john", "/audit"] {
        env.get(&john, path).await.assert_redirect("/signin");
    }
    env.post(
        &john,
        "/domains/a.test/users/john/password",
        &[("password", "x")],
    )
    .await
    .assert_redirect("/signin");
    // ... nor an API token.
    let r = env
        .api(
            axum::http::Method::GET,
            "/api/v1/domains",
            Some(john.cookie.split('=').nth(1).expect("id")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // An admin session is no user session, even a super admin's with its CSRF token.
    let admin = env.super_admin().await;
    assert!(admin.cookie.starts_with(SESSION_COOKIE));
    env.get(&admin, "/me").await.assert_redirect("/me/signin");
    env.get(&admin, "/me/bin")
        .await
        .assert_redirect("/me/signin");
    let r = env
        .post(
            &admin,
            "/me/password",
            &[
                ("current", PASSWORD),
                ("password", "set by an admin cookie"),
                ("confirm", "set by an admin cookie"),
            ],
        )
        .await;
    r.assert_redirect("/me/signin");
    browser(&env, &sign_in(&env, "john@a.test", PASSWORD).await).await;
    // The user's page shows the user's own mailbox.
    let page = env.get(&john, "/me").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("john@a.test"));
}

#[tokio::test]
async fn a_password_change_works_and_the_old_password_no_longer_signs_in() {
    let env = env().await;
    let john = signed_in(&env).await;
    let other = signed_in(&env).await;
    let new = "the new main password";
    // A wrong current password, a short or mismatched new one: nothing changes.
    for (current, password, confirm, said) in [
        ("not it", new, new, "The current password is not right"),
        (PASSWORD, "short", "short", "Use a password of at least 8"),
        (
            PASSWORD,
            new,
            "something else",
            "The two new passwords differ",
        ),
    ] {
        let r = env
            .post(
                &john,
                "/me/password",
                &[
                    ("current", current),
                    ("password", password),
                    ("confirm", confirm),
                ],
            )
            .await;
        r.assert_redirect("/me");
        let shown = env.follow(&john, &r).await;
        assert!(shown.body.contains(said), "{said}: {}", shown.body);
    }
    browser(&env, &sign_in(&env, "john@a.test", PASSWORD).await).await;

    let r = env
        .post(
            &john,
            "/me/password",
            &[("current", PASSWORD), ("password", new), ("confirm", new)],
        )
        .await;
    r.assert_redirect("/me");
    let old = sign_in(&env, "john@a.test", PASSWORD).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    browser(&env, &sign_in(&env, "john@a.test", new).await).await;
    // The new password is what POP3 checks too: hash and SCRAM verifier both changed.
    let auth = env
        .store
        .find_user(&addr("john@a.test"))
        .await
        .expect("find")
        .expect("user");
    assert!(tenancy::verify_password(
        new.as_bytes(),
        &auth.password_hash
    ));
    assert!(!tenancy::verify_password(
        PASSWORD.as_bytes(),
        &auth.password_hash
    ));
    assert!(auth.scram.is_some());
    // Every session of the old password ended; the browser that made the change goes on
    // with a new one.
    env.get(&john, "/me").await.assert_redirect("/me/signin");
    env.get(&other, "/me").await.assert_redirect("/me/signin");
    let renewed = browser_of(&env, &r).await;
    assert_eq!(env.get(&renewed, "/me").await.status, StatusCode::OK);
    // Audited as the user.
    let page = env
        .store
        .audit_page(&Scope::All, &Default::default(), 0, 100)
        .await
        .expect("audit");
    assert!(page.items.iter().any(|e| e.actor == "user:john@a.test"
        && e.action == "user.password"
        && e.object == "john@a.test"
        && e.success));
}

#[tokio::test]
async fn the_bin_restores_the_users_own_mail_only() {
    let env = Env::with_domains().await;
    deliver_and_delete(&env, "john@a.test", 2).await;
    deliver_and_delete(&env, "mary@a.test", 1).await;
    set_password(&env, "john@a.test", PASSWORD).await;
    env.store
        .set_self_service(&domain("a.test"), true)
        .await
        .expect("on");
    let john = signed_in(&env).await;
    let johns = bin_ids(&env, "john@a.test").await;
    let marys = bin_ids(&env, "mary@a.test").await;
    assert_eq!((johns.len(), marys.len()), (2, 1));

    let page = env.get(&john, "/me/bin").await;
    assert_eq!(page.status, StatusCode::OK);
    for id in &johns {
        assert!(page.body.contains(&format!("value=\"{id}\"")));
    }
    assert!(!page.body.contains(&format!("value=\"{}\"", marys[0])));

    // Mary's entry id, posted by John, restores nothing of hers.
    let mary = marys[0].to_string();
    let r = env
        .post(
            &john,
            "/me/bin/restore",
            &[("mode", "selected"), ("selected", &mary)],
        )
        .await;
    r.assert_redirect("/me/bin");
    assert!(
        env.follow(&john, &r)
            .await
            .body
            .contains("0 message(s) restored")
    );
    assert_eq!(bin_ids(&env, "mary@a.test").await, marys);

    let first = johns[0].to_string();
    let r = env
        .post(
            &john,
            "/me/bin/restore",
            &[("mode", "selected"), ("selected", &first)],
        )
        .await;
    assert!(
        env.follow(&john, &r)
            .await
            .body
            .contains("1 message(s) restored")
    );
    assert_eq!(bin_ids(&env, "john@a.test").await, vec![johns[1]]);
    // "Restore all" is all of John's, none of Mary's.
    env.post(&john, "/me/bin/restore", &[("mode", "all")]).await;
    assert!(bin_ids(&env, "john@a.test").await.is_empty());
    assert_eq!(bin_ids(&env, "mary@a.test").await, marys);
    let page = env
        .store
        .audit_page(&Scope::All, &Default::default(), 0, 100)
        .await
        .expect("audit");
    assert!(
        page.items
            .iter()
            .any(|e| e.actor == "user:john@a.test" && e.action == "user.bin.restore")
    );
}

/// The new app password a page shows, if it shows one.
fn shown_password(body: &str) -> Option<String> {
    let open = "<code id=\"new-app-password-value\">";
    let start = body.find(open)? + open.len();
    Some(body[start..start + body[start..].find('<')?].to_string())
}

#[tokio::test]
async fn app_passwords_are_made_shown_once_listed_and_revoked() {
    let env = env().await;
    let john = signed_in(&env).await;
    let r = env
        .post(&john, "/me/app-passwords", &[("label", "Anna's phone")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let password = shown_password(&r.body).expect("the new password, shown");
    assert!(password.len() >= 20, "{password}");
    // Listed by label from then on, never shown again.
    let page = env.get(&john, "/me").await;
    assert!(page.body.contains("Anna&#x27;s phone") || page.body.contains("Anna&#39;s phone"));
    assert!(shown_password(&page.body).is_none());
    assert!(!page.body.contains(&password));
    // The same label again is refused on the form.
    let again = env
        .post(&john, "/me/app-passwords", &[("label", "Anna's phone")])
        .await;
    assert_eq!(
        again.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        again.body
    );
    assert!(shown_password(&again.body).is_none());
    // An app password is no key to this page: only the main password signs in.
    let r = sign_in(&env, "john@a.test", &password).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = env
        .post(
            &john,
            "/me/app-passwords/revoke",
            &[("label", "Anna's phone")],
        )
        .await;
    r.assert_redirect("/me");
    let page = env.follow(&john, &r).await;
    assert!(page.body.contains("revoked"));
    assert!(page.body.contains("id=\"no-app-passwords\""));
    let actions = env.audit_actions().await;
    assert!(actions.contains(&"user.app_password.add".to_string()));
    assert!(actions.contains(&"user.app_password.revoke".to_string()));
}

#[tokio::test]
async fn the_domain_form_and_the_api_switch_the_page() {
    let env = Env::with_domains().await;
    let b = env.super_admin().await;
    let page = env.get(&b, "/domains/a.test").await;
    assert!(
        page.body
            .contains(r#"id="self_service" name="self_service" value="on">"#)
    );
    let form = [
        ("quota_bytes", ""),
        ("quota_messages", ""),
        ("max_users", ""),
        ("login_forms", "at"),
        ("enabled", "on"),
        ("bin_form", "1"),
        ("bin_days", "7"),
        ("self_service", "on"),
    ];
    let r = env.post(&b, "/domains/a.test", &form).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        env.store
            .self_service(&domain("a.test"))
            .await
            .expect("flag")
    );
    let page = env.get(&b, "/domains/a.test").await;
    assert!(
        page.body
            .contains(r#"id="self_service" name="self_service" value="on" checked>"#)
    );

    let root = env.add_admin("api@admin.test", Scope::All).await;
    let token = env.token(root).await;
    let r = env
        .api(
            axum::http::Method::GET,
            "/api/v1/domains/a.test",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.json()["self_service"], true, "{}", r.body);
    let r = env
        .api(
            axum::http::Method::PATCH,
            "/api/v1/domains/a.test",
            Some(&token),
            Some(serde_json::json!({"self_service": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["self_service"], false);
    assert!(
        !env.store
            .self_service(&domain("a.test"))
            .await
            .expect("flag")
    );
    // A domain admin may not open the page for their users: it is a service decision.
    let tenant = env
        .add_admin("t@admin.test", Scope::Domains(vec![domain("a.test")]))
        .await;
    let token = env.token(tenant).await;
    let r = env
        .api(
            axum::http::Method::PATCH,
            "/api/v1/domains/a.test",
            Some(&token),
            Some(serde_json::json!({"self_service": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        !env.store
            .self_service(&domain("a.test"))
            .await
            .expect("flag")
    );
}

#[tokio::test]
async fn an_admin_password_reset_or_disable_ends_the_users_sessions() {
    let env = env().await;
    let admin = env.super_admin().await;
    let john = signed_in(&env).await;
    let r = env
        .post(
            &admin,
            "/domains/a.test/users/john/password",
            &[("password", "set by the help desk")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    env.get(&john, "/me").await.assert_redirect("/me/signin");

    let john = browser(
        &env,
        &sign_in(&env, "john@a.test", "set by the help desk").await,
    )
    .await;
    env.store
        .set_user_enabled(&addr("john@a.test"), false)
        .await
        .expect("disable");
    env.get(&john, "/me").await.assert_redirect("/me/signin");
    // Through provisioning, disabling ends the session for good: enabling does not revive it.
    env.store
        .set_user_enabled(&addr("john@a.test"), true)
        .await
        .expect("enable");
    assert_eq!(env.get(&john, "/me").await.status, StatusCode::OK);
    let r = env
        .post(
            &admin,
            "/domains/a.test/users/john/enabled",
            &[("enabled", "false")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    env.store
        .set_user_enabled(&addr("john@a.test"), true)
        .await
        .expect("enable");
    env.get(&john, "/me").await.assert_redirect("/me/signin");
}

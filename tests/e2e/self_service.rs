//! The users' self-service page (issue 22, item 2) on the real `pophost serve`: off until
//! `pophost domain set --self-service true`, then a user signs in at `/me` over HTTP with their
//! main password, sees the POP3 login they just made, restores a message POP3 deleted, and
//! changes their password, after which POP3 takes the new password and not the old one.

use std::net::SocketAddr;

use crate::browser::Browser;
use crate::harness::{
    HttpResponse, PASSWORD, Pop3, Server, deliver, form_body, http, message, show,
};

const JOHN: &str = "john@example.com";
const NEW: &str = "a new main password";

/// Opens `/me/signin` and submits it as a browser would (its double-submit cookie and field).
fn submit(addr: SocketAddr, login: &str, password: &str) -> HttpResponse {
    let form = http(addr, "GET", "/me/signin", &[], "");
    assert_eq!(form.status, 200, "{}", form.body);
    let pre = form.cookie("__Host-pophost-me-pre").expect("pre cookie");
    http(
        addr,
        "POST",
        "/me/signin",
        &[
            ("Cookie", &format!("__Host-pophost-me-pre={pre}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form_body(&[
            ("email", login),
            ("password", password),
            ("_pre", &form.hidden("_pre").expect("_pre field")),
        ]),
    )
}

/// A signed-in user's browser.
struct Me {
    addr: SocketAddr,
    cookie: String,
    csrf: String,
}

impl Me {
    fn sign_in(addr: SocketAddr, login: &str, password: &str) -> Me {
        let res = submit(addr, login, password);
        assert_eq!(res.status, 303, "sign-in refused: {}", res.body);
        assert_eq!(res.header("location"), Some("/me"));
        let cookie = res.cookie("__Host-pophost-me").expect("session cookie");
        let mut me = Me {
            addr,
            cookie,
            csrf: String::new(),
        };
        me.csrf = me.get("/me").hidden("_csrf").expect("csrf on /me");
        me
    }

    fn get(&self, path: &str) -> HttpResponse {
        let cookie = format!("__Host-pophost-me={}", self.cookie);
        http(self.addr, "GET", path, &[("Cookie", &cookie)], "")
    }

    fn post(&self, path: &str, fields: &[(&str, &str)]) -> HttpResponse {
        let mut fields = fields.to_vec();
        fields.push(("_csrf", &self.csrf));
        let cookie = format!("__Host-pophost-me={}", self.cookie);
        http(
            self.addr,
            "POST",
            path,
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &form_body(&fields),
        )
    }
}

fn app_password_shown(body: &str) -> Option<String> {
    let open = "<code id=\"new-app-password-value\">";
    let start = body.find(open)? + open.len();
    Some(body[start..start + body[start..].find('<')?].to_string())
}

fn pop3_password_works(server: &Server, password: &str) -> bool {
    let mut c = Pop3::connect(server.pop3);
    assert!(c.cmd(&format!("USER {JOHN}")).starts_with("+OK"));
    let ok = c.cmd(&format!("PASS {password}")).starts_with("+OK");
    c.send("QUIT");
    ok
}

#[test]
fn a_user_signs_in_restores_mail_and_changes_the_password_pop3_uses() {
    let server = Server::start();
    server.add_user(JOHN);

    // Off by default: the right password fails like a wrong one.
    let refused = submit(server.admin, JOHN, PASSWORD);
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("Wrong e-mail address or password."));
    let out = server.cli(&["domain", "set", "example.com", "--self-service", "true"]);
    assert!(out.status.success(), "{}", show(&out));

    // A POP3 session deletes a message; the page shows the login and the binned message.
    deliver(&server, JOHN, &message("keep me"));
    let mut c = Pop3::login(server.pop3, JOHN);
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let me = Me::sign_in(server.admin, JOHN, PASSWORD);
    let page = me.get("/me");
    assert_eq!(page.status, 200);
    assert!(page.body.contains(JOHN));
    assert!(
        page.body.contains("<td>127.0.0.1</td><td>USER</td>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<span id=\"bin-count\">1</span>"));

    // The admin pages do not take the user's session.
    let admin = http(
        server.admin,
        "GET",
        "/domains",
        &[("Cookie", &format!("__Host-pophost-session={}", me.cookie))],
        "",
    );
    assert_eq!(admin.status, 303);
    assert_eq!(admin.header("location"), Some("/signin"));

    let bin = me.get("/me/bin");
    assert_eq!(bin.status, 200);
    let restored = me.post("/me/bin/restore", &[("mode", "all")]);
    assert_eq!(restored.status, 303, "{}", restored.body);
    let mut c = Pop3::login(server.pop3, JOHN);
    let (_, retr) = c.fetch("RETR 1");
    assert!(String::from_utf8_lossy(&retr).contains("Subject: keep me"));
    c.send("QUIT");

    // A password change without the current password changes nothing.
    let r = me.post(
        "/me/password",
        &[("current", "wrong"), ("password", NEW), ("confirm", NEW)],
    );
    assert_eq!(r.status, 303);
    assert!(pop3_password_works(&server, PASSWORD));

    let r = me.post(
        "/me/password",
        &[("current", PASSWORD), ("password", NEW), ("confirm", NEW)],
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/me"));
    assert!(pop3_password_works(&server, NEW));
    assert!(!pop3_password_works(&server, PASSWORD));
    let plain = server.auth_plain(JOHN, NEW);
    assert!(plain.starts_with("+OK"), "{plain}");
    // And the page itself: the old password no longer signs in, the new one does.
    assert_eq!(submit(server.admin, JOHN, PASSWORD).status, 401);

    // An app password made on the page logs in over POP3; revoked there, it no longer does.
    let me = Me::sign_in(server.admin, JOHN, NEW);
    let made = me.post("/me/app-passwords", &[("label", "Anna's phone")]);
    assert_eq!(made.status, 200, "{}", made.body);
    let app = app_password_shown(&made.body).expect("the new app password");
    assert!(pop3_password_works(&server, &app));
    let revoked = me.post("/me/app-passwords/revoke", &[("label", "Anna's phone")]);
    assert_eq!(revoked.status, 303);
    assert!(!pop3_password_works(&server, &app));
    assert!(pop3_password_works(&server, NEW));

    // Audited as the user.
    let actions = server.data().sql(
        "SELECT count(*) FROM audit_log WHERE actor = 'user:john@example.com' \
         AND action IN ('user.password', 'user.bin.restore')",
    );
    assert_eq!(actions, "2");

    // Turned off, the session ends at once.
    let out = server.cli(&["domain", "set", "example.com", "--self-service", "false"]);
    assert!(out.status.success(), "{}", show(&out));
    let gone = me.get("/me");
    assert_eq!(gone.status, 303);
    assert_eq!(gone.header("location"), Some("/me/signin"));
}

/// The page in a real browser (headless Chromium): its forms pass the `Origin`/CSRF checks as a
/// browser sends them, and what it does is what POP3 sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_in_a_browser_makes_an_app_password_and_changes_the_password() {
    let server = Server::start();
    server.add_user(JOHN);
    let out = server.cli(&["domain", "set", "example.com", "--self-service", "true"]);
    assert!(out.status.success(), "{}", show(&out));
    let b = Browser::start(server.admin).await;

    b.goto("/me").await;
    assert_eq!(b.path().await, "/me/signin", "no session: sent to sign-in");
    b.fill("form#me-signin input[name=email]", JOHN).await;
    b.fill("form#me-signin input[name=password]", "not it")
        .await;
    b.click_through("button#signin-submit").await;
    assert_eq!(
        b.text("#signin-error").await,
        "Wrong e-mail address or password."
    );
    b.fill("form#me-signin input[name=email]", JOHN).await;
    b.fill("form#me-signin input[name=password]", PASSWORD)
        .await;
    b.click_through("button#signin-submit").await;
    assert_eq!(b.path().await, "/me");
    assert_eq!(b.text("#who").await, JOHN);
    // The admin UI does not know this browser.
    b.goto("/").await;
    assert_eq!(b.path().await, "/signin");
    b.goto("/me").await;

    b.fill("form#app-password-form input[name=label]", "Anna's phone")
        .await;
    b.click_through("button#add-app-password").await;
    let app = b.text("#new-app-password-value").await;
    b.shot("self-service-app-password").await;
    assert!(pop3_password_works(&server, &app), "{app}");

    b.goto("/me").await;
    b.fill("form#password-form input[name=current]", PASSWORD)
        .await;
    b.fill("form#password-form input[name=password]", NEW).await;
    b.fill("form#password-form input[name=confirm]", NEW).await;
    b.click_through("button#change-password").await;
    assert_eq!(b.path().await, "/me");
    assert!(b.text("#flash").await.contains("Password changed"));
    assert!(pop3_password_works(&server, NEW));
    assert!(!pop3_password_works(&server, PASSWORD));
    // The app password is not the main password: it still works.
    assert!(pop3_password_works(&server, &app));

    b.click_through("button#signout").await;
    assert_eq!(b.path().await, "/me/signin");
    b.goto("/me").await;
    assert_eq!(b.path().await, "/me/signin");
    b.quit().await;
}

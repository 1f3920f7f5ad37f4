//! The admin UI in a real browser (headless Chromium over WebDriver, see `browser.rs`): the
//! bootstrap link, provisioning a mailbox that then works over LMTP and POP3, a domain admin's
//! scope, markup in names rendered as text, and CSRF. Each test saves screenshots of the pages
//! it visits (`scripts/screenshots` writes them to docs/screenshots).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::browser::Browser;
use crate::harness::*;

const SUPER: &str = "root@ops.example";
const SUPER_PASSWORD: &str = "correct horse battery staple";

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `pophost admin add EMAIL --super --password PASSWORD`.
fn add_super(server: &Server) {
    ok(server.cli(&[
        "admin",
        "add",
        SUPER,
        "--super",
        "--password",
        SUPER_PASSWORD,
    ]));
}

/// The domains `pophost domain list` shows.
fn domain_list(server: &Server) -> String {
    ok(server.cli(&["domain", "list"]))
}

fn lists_domain(server: &Server, name: &str) -> bool {
    domain_list(server)
        .split_whitespace()
        .any(|word| word == name)
}

/// A POP3 login with `password`: the session, or the server's refusal.
fn pop3_login(addr: SocketAddr, user: &str, password: &str) -> Result<Pop3, String> {
    let mut c = Pop3::connect(addr);
    let r = c.cmd(&format!("USER {user}"));
    if !r.starts_with("+OK") {
        return Err(r);
    }
    let r = c.cmd(&format!("PASS {password}"));
    if r.starts_with("+OK") { Ok(c) } else { Err(r) }
}

/// The one-time bootstrap path (`/bootstrap/TOKEN`) the server logged at start.
fn bootstrap_path(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log.lock().expect("log").clone();
        if let Some(at) = log.find("/bootstrap/") {
            let token: String = log[at + "/bootstrap/".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            assert!(
                !token.is_empty(),
                "empty bootstrap token in the log:\n{log}"
            );
            return format!("/bootstrap/{token}");
        }
        assert!(
            Instant::now() < deadline,
            "no bootstrap link in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The numeric value of the first `meter.usage` under `scope`.
async fn meter_value(b: &Browser, scope: &str) -> f64 {
    let css = format!("{scope} meter.usage");
    b.find(&css).await;
    let value = b
        .js(&format!("return document.querySelector('{css}').value"))
        .await;
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{css} value {value:?}"))
}

/// The page shows no markup smuggled in through names: no `<script>` element but the users
/// table's select-all, no `<img>` element, and nothing set `window.__xss`. No alert dialog is
/// open either.
async fn assert_inert(b: &Browser, page: &str) {
    assert_eq!(b.alert().await, None, "an alert dialog is open on {page}");
    let clean = b
        .js("return window.__xss === undefined \
             && document.querySelectorAll('img').length === 0 \
             && document.querySelectorAll('script:not([src=\"/static/select-all.js\"])').length === 0")
        .await;
    assert_eq!(
        clean,
        serde_json::json!(true),
        "injected markup became elements on {page}:\n{}",
        b.client.source().await.unwrap_or_default()
    );
}

// 1. The bootstrap link creates the first super admin; a domain, a quota and a mailbox made in
//    the browser work over LMTP and POP3; a password changed in the browser is the one POP3 takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_then_provision_a_mailbox() {
    let server = Server::start();
    let bootstrap = bootstrap_path(&server);
    let b = Browser::start(server.admin).await;

    // Before any admin exists, signing in goes nowhere; the bootstrap link shows its form.
    b.goto("/").await;
    assert_eq!(
        b.path().await,
        "/signin",
        "no session: the dashboard sends to sign-in"
    );
    b.goto(&bootstrap).await;
    b.find("form#signin").await;
    b.shot("bootstrap").await;
    // Too short a password is refused on the same form.
    b.submit_signin(SUPER, "short").await;
    let error = b
        .wait_for("#signin-error")
        .await
        .text()
        .await
        .expect("text");
    assert!(error.contains("12"), "bootstrap error: {error}");
    b.submit_signin(SUPER, SUPER_PASSWORD).await;
    let who = b.wait_for("#who").await.text().await.expect("text");
    assert!(who.contains(SUPER), "#who: {who}");
    assert_eq!(b.path().await, "/");
    assert_eq!(b.text("#stat-domains").await, "0");
    b.find("svg#activity-chart").await;
    // The link works once.
    b.goto(&bootstrap).await;
    b.expect_not_found().await;

    // A domain with a storage quota.
    b.goto("/domains").await;
    b.click_through("a#new-domain").await;
    assert_eq!(b.path().await, "/domains/new");
    b.fill("form#domain-form input[name=name]", "shop.example")
        .await;
    b.click_through("form#domain-form button#save").await;
    assert_eq!(b.path().await, "/domains/shop.example");
    b.fill("form#domain-form input[name=quota_bytes]", "10M")
        .await;
    b.click_through("form#domain-form button#save").await;
    assert_eq!(b.path().await, "/domains/shop.example");
    assert_eq!(
        b.prop("form#domain-form input[name=quota_bytes]", "value")
            .await
            .as_deref(),
        Some("10M"),
        "the saved domain quota"
    );
    assert!(
        b.page_text().await.contains("10.0 MiB"),
        "domain page shows the quota"
    );
    // No logins as anna+shop.example (the other forms stay), and an alias shop.test.
    let plus = "form#domain-form input[name=login_forms][value=plus]";
    let percent = "form#domain-form input[name=login_forms][value=percent]";
    let checked = async |css: &str| b.find(css).await.is_selected().await.expect("checkbox");
    if !checked(percent).await {
        b.click(percent).await;
    }
    if checked(plus).await {
        b.click(plus).await;
    }
    b.click_through("form#domain-form button#save").await;
    assert_eq!(b.path().await, "/domains/shop.example");
    assert!(
        checked(percent).await,
        "the percent login form was not saved"
    );
    assert!(!checked(plus).await, "the plus login form is still on");
    assert!(
        checked("form#domain-form input[name=enabled]").await,
        "a new domain is enabled"
    );
    b.fill("form#alias-form input[name=alias]", "shop.test")
        .await;
    b.click_through("form#alias-form button[type=submit]").await;
    assert_eq!(b.path().await, "/domains/shop.example");
    assert!(
        b.text("#aliases").await.contains("shop.test"),
        "the alias is listed"
    );
    assert!(domain_list(&server).contains("shop.example"));

    // A mailbox with a password and a quota of its own.
    b.click_through("a#users").await;
    assert_eq!(b.path().await, "/domains/shop.example/users");
    b.click_through("a#new-user").await;
    assert_eq!(b.path().await, "/domains/shop.example/users/new");
    let first_password = "anna's first pass";
    b.fill("form#user-form input[name=local]", "anna").await;
    b.fill("form#user-form input[name=password]", first_password)
        .await;
    b.fill("form#user-form input[name=quota_bytes]", "5M").await;
    b.click_through("form#user-form button#save").await;
    assert_eq!(b.path().await, "/domains/shop.example/users/anna");

    // Two messages over LMTP: the usage shows on the users list, the user page and the dashboard.
    let anna = "anna@shop.example";
    deliver(&server, anna, &message("first"));
    // The second one large enough for the usage bars to show it (about 1 MiB of the 5M quota).
    let mut big = b"From: a@example.net\r\nSubject: second\r\n\r\n".to_vec();
    for _ in 0..14_000 {
        big.extend_from_slice(&[b'x'; 76]);
        big.extend_from_slice(b"\r\n");
    }
    deliver(&server, anna, &big);
    b.goto("/domains/shop.example/users").await;
    let rows = b.text("table#users").await;
    assert!(rows.contains(anna), "users table: {rows}");
    let used = meter_value(&b, "table#users").await;
    assert!(used > 0.0, "users list meter after two deliveries: {used}");
    b.shot("users").await;
    b.goto("/domains/shop.example/users/anna").await;
    let used = meter_value(&b, "main").await;
    assert!(used > 0.0, "user page meter after two deliveries: {used}");
    let text = b.page_text().await;
    assert!(text.contains("2 message(s)"), "user page: {text}");
    b.shot("user-edit").await;
    b.goto("/domains/shop.example").await;
    assert!(
        b.text("a#users").await.contains('1'),
        "{}",
        b.text("a#users").await
    );
    assert!(meter_value(&b, "main").await > 0.0, "domain page meter");
    b.shot("domain-edit").await;
    b.goto("/").await;
    assert_eq!(b.text("#stat-domains").await, "1");
    assert_eq!(b.text("#stat-users").await, "1");
    let storage = b.text("#stat-storage").await;
    assert!(
        !storage.starts_with("0 B"),
        "#stat-storage after deliveries: {storage}"
    );
    let delivered = b
        .js(
            "return Array.from(document.querySelectorAll('#activity-chart rect.delivered'))\
             .some(r => Number(r.getAttribute('height')) > 0)",
        )
        .await;
    assert_eq!(
        delivered,
        serde_json::json!(true),
        "the chart shows the deliveries"
    );

    // POP3 takes the password set in the browser; the open session shows on /sessions.
    let mut pop = pop3_login(server.pop3, anna, first_password).expect("POP3 login");
    assert_eq!(pop.stat().0, 2, "STAT after two deliveries");
    b.goto("/").await;
    b.shot("dashboard").await;
    b.goto("/sessions").await;
    let sessions = b.text("table#sessions").await;
    assert!(sessions.contains(anna), "sessions table: {sessions}");
    assert!(!b.find_all("table#sessions .end-session").await.is_empty());
    b.shot("sessions").await;
    assert!(pop.cmd("QUIT").starts_with("+OK"));

    // A new password from the browser: the old one stops working, the new one works.
    let second_password = "anna's second pass";
    b.goto("/domains/shop.example/users/anna").await;
    b.fill("form#password-form input[name=password]", second_password)
        .await;
    b.click_through("form#password-form button#set-password")
        .await;
    assert_eq!(b.path().await, "/domains/shop.example/users/anna");
    assert!(
        b.try_find("p.field-error").await.is_none(),
        "{}",
        b.page_text().await
    );
    let refused = pop3_login(server.pop3, anna, first_password);
    assert!(
        refused.is_err(),
        "the old password still works after the change"
    );
    let mut pop = pop3_login(server.pop3, anna, second_password).expect("new password");
    assert_eq!(pop.stat().0, 2);
    assert!(pop.cmd("QUIT").starts_with("+OK"));

    // Disabled in the browser, anna cannot log in; enabled again, she can.
    b.click_through("form#enabled-form button#toggle-enabled")
        .await;
    assert_eq!(b.path().await, "/domains/shop.example/users/anna");
    let refused = pop3_login(server.pop3, anna, second_password);
    assert!(refused.is_err(), "a disabled user logged in");
    b.click_through("form#enabled-form button#toggle-enabled")
        .await;
    // Mail to the alias reaches her; the percent login form works, the plus one does not.
    let refused = pop3_login(server.pop3, "anna+shop.example", second_password);
    assert!(refused.is_err(), "a login form turned off still works");
    deliver(&server, "anna@shop.test", &message("via the alias"));
    let mut pop =
        pop3_login(server.pop3, "anna%shop.example", second_password).expect("enabled again");
    assert_eq!(pop.stat().0, 3, "STAT after a delivery to the alias");
    assert!(pop.cmd("QUIT").starts_with("+OK"));

    // The audit log has the changes; the domains list and the API token page render.
    b.goto("/audit").await;
    let audit = b.text("table#audit").await;
    assert!(audit.contains("shop.example"), "audit log: {audit}");
    assert!(audit.contains(anna), "audit log: {audit}");
    b.find("form#audit-filter").await;
    b.shot("audit").await;
    b.goto("/domains").await;
    assert!(b.text("table#domains").await.contains("shop.example"));
    b.shot("domains").await;
    b.goto("/tokens").await;
    b.find("form#token-form").await;
    b.shot("tokens").await;

    // Sign out; a wrong password is refused; the right one signs in again.
    b.click_through("button#signout").await;
    assert_eq!(b.path().await, "/signin");
    b.goto("/domains").await;
    assert_eq!(
        b.path().await,
        "/signin",
        "signed out: pages send to sign-in"
    );
    b.shot("signin").await;
    b.submit_signin(SUPER, "not the password").await;
    let error = b
        .wait_for("#signin-error")
        .await
        .text()
        .await
        .expect("text");
    assert!(!error.is_empty());
    assert!(
        b.try_find("#who").await.is_none(),
        "signed in with a wrong password"
    );
    b.shot("signin-error").await;
    b.sign_in(SUPER, SUPER_PASSWORD).await;
    b.quit().await;
}

// 2. A domain admin sees their domain only: other domains are 404 like domains that do not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_admin_sees_only_their_domain() {
    let server = Server::start();
    add_super(&server);
    server.add_user("ann@alpha.example");
    server.add_user("bob@beta.example");
    server.add_user("bea@beta.example");
    deliver(&server, "bob@beta.example", &message("for beta"));
    let admin = "admin@alpha.example";
    let password = "alpha admin password";
    ok(server.cli(&[
        "admin",
        "add",
        admin,
        "--domain",
        "alpha.example",
        "--password",
        password,
    ]));

    let b = Browser::start(server.admin).await;
    b.sign_in(admin, password).await;
    assert!(
        !b.text("#who").await.contains("super"),
        "a domain admin is not super"
    );
    assert_eq!(b.text("#stat-domains").await, "1", "dashboard domain count");
    assert_eq!(b.text("#stat-users").await, "1", "dashboard user count");

    b.goto("/domains").await;
    let table = b.text("table#domains").await;
    assert!(table.contains("alpha.example"), "domains table: {table}");
    assert!(!table.contains("beta.example"), "domains table: {table}");
    assert!(
        b.try_find("a#new-domain").await.is_none(),
        "a domain admin may not add domains"
    );
    b.shot("domains-domain-admin").await;
    // Searching for the other domain finds nothing either.
    b.fill("form#search input[name=q]", "beta").await;
    b.click_through("form#search button").await;
    assert!(!b.text("table#domains").await.contains("beta.example"));

    b.goto("/domains/alpha.example/users").await;
    assert!(b.text("table#users").await.contains("ann@alpha.example"));
    b.goto("/domains/alpha.example/users/ann").await;
    b.find("form#password-form").await;

    // The other domain, its users list and a user of it look like something that does not exist.
    let mut not_found_texts = Vec::new();
    for path in [
        "/domains/beta.example",
        "/domains/beta.example/users",
        "/domains/beta.example/users/bob",
        "/domains/beta.example/users/new",
        "/domains/beta.example/users/nobody",
        "/domains/gamma.example",
        "/domains/gamma.example/users/x",
    ] {
        b.goto(path).await;
        b.expect_not_found().await;
        let text = b.page_text().await;
        assert!(
            !text.contains("bob") && !text.contains("beta.example"),
            "{path} tells about the other domain: {text}"
        );
        not_found_texts.push(text);
    }
    assert!(
        not_found_texts.windows(2).all(|w| w[0] == w[1]),
        "404 pages differ between out-of-scope and missing: {not_found_texts:?}"
    );
    b.shot("not-found").await;

    // Nor can the domain admin change it with forms of their own making (a valid session and
    // CSRF token, the other domain in the URL).
    b.goto("/domains/alpha.example").await;
    let (cookie, csrf) = session_of(&b).await;
    for (path, form, expected) in [
        ("/domains", "name=new.example".to_string(), 403),
        (
            "/domains/beta.example",
            "quota_bytes=1K&enabled=on".into(),
            404,
        ),
        (
            "/domains/beta.example/aliases",
            "alias=beta-alias.example".into(),
            404,
        ),
        (
            "/domains/beta.example/users",
            "local=mallory&password=mallory%27s+password".into(),
            404,
        ),
        (
            "/domains/beta.example/users/bob/password",
            "password=taken+over+now".into(),
            404,
        ),
        (
            "/domains/beta.example/users/bob/enabled",
            "enabled=false".into(),
            404,
        ),
        ("/domains/beta.example/users/bob/delete", String::new(), 404),
        (
            "/domains/beta.example/users/bulk",
            "action=delete&selected=bea".into(),
            404,
        ),
        ("/domains/beta.example/delete", "force=on".into(), 404),
        ("/sessions/bob%40beta.example/end", String::new(), 404),
    ] {
        let body = format!("{form}&_csrf={csrf}");
        let (status, res) = post_form(server.admin, path, &cookie, &body, &[]);
        assert_eq!(
            status, expected,
            "POST {path} by the admin of alpha:\n{res}"
        );
    }
    assert!(!lists_domain(&server, "new.example"));
    let users = ok(server.cli(&["user", "list", "beta.example"]));
    for user in ["bob@beta.example", "bea@beta.example"] {
        assert!(users.contains(user), "{user} is gone:\n{users}");
    }
    assert!(!users.contains("mallory"), "{users}");
    let mut bob = pop3_login(server.pop3, "bob@beta.example", PASSWORD).expect("bob's password");
    assert!(bob.cmd("QUIT").starts_with("+OK"));
    // And the session is fine: the same token still works in alpha.
    let (status, res) = post_form(
        server.admin,
        "/domains/alpha.example/users",
        &cookie,
        &format!("local=amy&password=amy%27s+password&_csrf={csrf}"),
        &[],
    );
    assert!(
        (300..400).contains(&status),
        "creating a user in alpha:\n{res}"
    );
    assert!(ok(server.cli(&["user", "list", "alpha.example"])).contains("amy@alpha.example"));

    // The sessions page does not list the other domain's mailboxes.
    let _pop = pop3_login(server.pop3, "bob@beta.example", PASSWORD).expect("bob POP3");
    b.goto("/sessions").await;
    let sessions = b.text("table#sessions").await;
    assert!(
        !sessions.contains("bob@beta.example"),
        "sessions: {sessions}"
    );
    b.goto("/").await;
    assert_eq!(
        b.text("#stat-sessions").await,
        "0",
        "dashboard counts beta's session"
    );
    b.quit().await;
}

// 3. Markup in names (domain, token, quota fields) is shown as text and never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_render_as_text() {
    let server = Server::start();
    add_super(&server);
    ok(server.cli(&["domain", "add", "hostile.example"]));
    let b = Browser::start(server.admin).await;
    b.sign_in(SUPER, SUPER_PASSWORD).await;

    // A domain named like a script: refused with a field error; the value comes back as text.
    let script_name = "<script>alert(1)</script>";
    b.goto("/domains/new").await;
    b.fill("form#domain-form input[name=name]", script_name)
        .await;
    b.click_through("form#domain-form button#save").await;
    let error = b.wait_for("p.field-error#error-name").await;
    let error = error.text().await.expect("text");
    assert!(!error.is_empty(), "empty field error");
    assert!(
        !error.contains("script") || error.contains(script_name),
        "the error names the value but not as typed: {error}"
    );
    assert_eq!(
        b.prop("form#domain-form input[name=name]", "value")
            .await
            .as_deref(),
        Some(script_name),
        "the form shows the value as typed"
    );
    assert_eq!(
        b.js(
            "return document.querySelectorAll('script:not([src=\"/static/select-all.js\"])').length"
        )
        .await,
        serde_json::json!(0)
    );
    assert_inert(&b, "/domains (rejected name)").await;
    b.shot("field-errors").await;
    assert!(
        !domain_list(&server).contains("script"),
        "the domain was created"
    );

    // A token named with an attribute break-out: listed as text on /tokens and in the audit log.
    let token_name = r#""><img src=x onerror="window.__xss=1">"#;
    b.goto("/tokens").await;
    b.fill("form#token-form input[name=name]", token_name).await;
    b.click_through("form#token-form button#create-token").await;
    let secret = b.wait_for("#new-token").await.text().await.expect("text");
    assert!(secret.len() > 20, "new token: {secret}");
    assert!(
        b.text("table#tokens").await.contains(token_name),
        "the token name as text on /tokens"
    );
    assert_inert(&b, "/tokens (after create)").await;
    b.goto("/tokens").await;
    assert!(b.text("table#tokens").await.contains(token_name));
    assert_inert(&b, "/tokens").await;
    b.shot("tokens-hostile").await;

    // A quota field holding markup: refused, echoed as text.
    let quota = r#""><img src=x onerror=window.__xss=1>"#;
    b.goto("/domains/hostile.example/users/new").await;
    b.fill("form#user-form input[name=local]", "eve").await;
    b.fill("form#user-form input[name=password]", "eve's password")
        .await;
    b.fill("form#user-form input[name=quota_bytes]", quota)
        .await;
    b.click_through("form#user-form button#save").await;
    b.wait_for("p.field-error#error-quota_bytes").await;
    assert_eq!(
        b.prop("form#user-form input[name=quota_bytes]", "value")
            .await
            .as_deref(),
        Some(quota),
        "the quota field shows the value as typed"
    );
    assert_inert(&b, "/domains/hostile.example/users (rejected quota)").await;
    // The same on an existing user's page.
    ok(server.cli(&["user", "add", "ed@hostile.example", "--password", PASSWORD]));
    b.goto("/domains/hostile.example/users/ed").await;
    b.fill("form#user-form input[name=quota_bytes]", quota)
        .await;
    b.click_through("form#user-form button#save").await;
    b.wait_for("p.field-error#error-quota_bytes").await;
    assert_eq!(
        b.prop("form#user-form input[name=quota_bytes]", "value")
            .await
            .as_deref(),
        Some(quota)
    );
    assert_inert(&b, "/domains/hostile.example/users/ed (rejected quota)").await;
    b.shot("user-field-errors").await;

    // A search term with markup is echoed as text.
    b.goto("/domains?q=%22%3E%3Cimg%20src%3Dx%20onerror%3Dwindow.__xss%3D1%3E")
        .await;
    assert_eq!(
        b.prop("form#search input[name=q]", "value")
            .await
            .as_deref(),
        Some("\"><img src=x onerror=window.__xss=1>")
    );
    assert_inert(&b, "/domains?q=…").await;

    // The audit log shows the token's name, as text.
    b.goto("/audit").await;
    let audit = b.text("table#audit").await;
    assert!(audit.contains("token.create"), "audit log: {audit}");
    assert!(
        audit.contains("onerror=") && audit.contains("<img"),
        "the token name in the audit log: {audit}"
    );
    assert_inert(&b, "/audit").await;
    b.shot("audit-hostile").await;
    b.quit().await;
}

/// A raw HTTP/1.1 request to the admin UI: `(status, response text)`.
fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let out = String::from_utf8_lossy(&out).to_string();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out}"));
    (status, out)
}

/// POST `path` as a form would, with the session `cookie`, the form `body` and more `headers`.
fn post_form(
    addr: SocketAddr,
    path: &str,
    cookie: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: __Host-pophost-session={cookie}\r\n\
             {extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// POST /domains, maybe with an `Origin`.
fn post_domain(addr: SocketAddr, cookie: &str, body: &str, origin: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
    post_form(addr, "/domains", cookie, body, &headers)
}

/// The browser's session cookie and the CSRF token of the page shown.
async fn session_of(b: &Browser) -> (String, String) {
    let cookie = b
        .client
        .get_named_cookie("__Host-pophost-session")
        .await
        .expect("the session cookie in the browser")
        .value()
        .to_string();
    assert!(!cookie.is_empty());
    let csrf = b
        .attr("input[name=_csrf]", "value")
        .await
        .expect("_csrf field");
    assert!(csrf.len() >= 16, "CSRF token {csrf:?}");
    (cookie, csrf)
}

// 4. A POST without the form's CSRF token, with a wrong one, or from another origin is refused
//    (403) and changes nothing, from a raw client with the session cookie and from the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_less_post_is_refused() {
    let server = Server::start();
    add_super(&server);
    let b = Browser::start(server.admin).await;
    b.sign_in(SUPER, SUPER_PASSWORD).await;
    b.goto("/domains/new").await;
    let (cookie, csrf) = session_of(&b).await;
    let origin = format!("http://{}", server.admin);

    let (status, res) = post_domain(server.admin, &cookie, "name=nocsrf.example", None);
    assert_eq!(status, 403, "POST without _csrf:\n{res}");
    let (status, res) = post_domain(
        server.admin,
        &cookie,
        "name=wrongcsrf.example&_csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        None,
    );
    assert_eq!(status, 403, "POST with a wrong _csrf:\n{res}");
    let (status, res) = post_domain(server.admin, &cookie, "name=emptycsrf.example&_csrf=", None);
    assert_eq!(status, 403, "POST with an empty _csrf:\n{res}");
    let (status, res) = post_domain(
        server.admin,
        &cookie,
        &format!("name=evil.example&_csrf={csrf}"),
        Some("http://evil.example"),
    );
    assert_eq!(status, 403, "POST from another origin:\n{res}");
    let (status, res) = post_domain(
        server.admin,
        &cookie,
        &format!("name=nullorigin.example&_csrf={csrf}"),
        Some("null"),
    );
    assert_eq!(status, 403, "POST with Origin: null:\n{res}");
    // What a sandboxed frame on another site sends.
    let (status, res) = post_form(
        server.admin,
        "/domains",
        &cookie,
        &format!("name=sandboxed.example&_csrf={csrf}"),
        &[("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(
        status, 403,
        "POST with Origin: null from another site:\n{res}"
    );
    let (status, res) = post_form(
        server.admin,
        "/domains",
        &cookie,
        &format!("name=crosssite.example&_csrf={csrf}"),
        &[("Sec-Fetch-Site", "same-site")],
    );
    assert_eq!(status, 403, "POST from a sibling site:\n{res}");
    let list = domain_list(&server);
    for refused in [
        "nocsrf.example",
        "wrongcsrf.example",
        "emptycsrf.example",
        "evil.example",
        "nullorigin.example",
        "sandboxed.example",
        "crosssite.example",
    ] {
        assert!(!list.contains(refused), "{refused} was created:\n{list}");
    }
    // The control: the same request with the right token and origin works, so the refusals
    // above were about the token and the origin, not the cookie.
    let (status, res) = post_domain(
        server.admin,
        &cookie,
        &format!("name=good.example&_csrf={csrf}"),
        Some(&origin),
    );
    assert!(
        (300..400).contains(&status),
        "POST with the right token and origin:\n{res}"
    );
    assert!(
        lists_domain(&server, "good.example"),
        "{}",
        domain_list(&server)
    );

    // From the page itself: a form script-built without `_csrf`, submitted by the browser (with
    // its cookie and our own origin) is refused with a page that says so.
    b.goto("/domains").await;
    b.mark_page().await;
    b.js("const f = document.createElement('form');\
          f.method = 'post'; f.action = '/domains';\
          const i = document.createElement('input');\
          i.name = 'name'; i.value = 'scripted.example'; f.appendChild(i);\
          document.body.appendChild(f); f.submit();")
        .await;
    b.wait_new_page("the script-built form").await;
    let message = b
        .wait_for("#error-message")
        .await
        .text()
        .await
        .expect("text");
    assert!(message.contains("refused"), "refusal page: {message}");
    let (heading, _) = b.error_page().await.expect("error page");
    assert_eq!(heading, "403");
    b.shot("csrf-refused").await;
    assert!(
        !lists_domain(&server, "scripted.example"),
        "the script-built form created a domain"
    );
    // The session is still good after the refusals.
    b.goto("/domains").await;
    assert!(b.text("table#domains").await.contains("good.example"));
    b.quit().await;
}

// 5. Accounts move in from a CSV file uploaded in the browser: a preview that changes nothing
//    and names the bad line, then apply; the imported hash logs in over POP3 with the old
//    password and is counted on the dashboard until it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_file_uploaded_in_the_browser_moves_accounts_in() {
    let server = Server::start();
    add_super(&server);
    ok(server.cli(&["domain", "add", "shop.example"]));
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("accounts.csv");
    let old_hash = crate::accounts::doveadm_pw("SHA512-CRYPT", "anna's old password");
    std::fs::write(
        &file,
        format!(
            "address,password_hash,password,quota_bytes\n\
             anna@shop.example,{old_hash},,500M\n\
             bob@shop.example,,bob's brand new password,\n\
             carl@shop.example,{{DES-CRYPT}}abJnggxhB/yWI,,\n"
        ),
    )
    .expect("write csv");

    let b = Browser::start(server.admin).await;
    b.sign_in(SUPER, SUPER_PASSWORD).await;
    b.goto("/domains/shop.example/users").await;
    b.click_through("a#import-users").await;
    assert_eq!(b.path().await, "/domains/shop.example/users/import");
    b.find("input#file")
        .await
        .send_keys(file.to_str().expect("utf-8 path"))
        .await
        .expect("choose the file");
    b.click_through("button#preview").await;
    b.shot("users-import-preview").await;
    let summary = b.text("#import-summary").await;
    assert!(
        summary.contains("2 added, 0 updated, 0 unchanged, 1 failed"),
        "{summary}"
    );
    let rows = b.text("table#import-rows").await;
    assert!(
        rows.contains("carl@shop.example") && rows.contains("too weak"),
        "{rows}"
    );
    assert!(!rows.contains("abJnggxhB"), "a hash is shown: {rows}");
    assert!(
        !server
            .cli(&["user", "show", "anna@shop.example"])
            .status
            .success(),
        "a preview changes nothing"
    );

    b.click_through("button#apply").await;
    b.shot("users-import-applied").await;
    let summary = b.text("#import-summary").await;
    assert!(
        summary.contains("2 added, 0 updated, 0 unchanged, 1 failed"),
        "{summary}"
    );
    assert!(
        !b.page_text().await.contains("bob's brand new password"),
        "the applied page shows no passwords"
    );
    let anna = ok(server.cli(&["user", "show", "anna@shop.example"]));
    assert!(anna.contains("password_scheme: SHA512-CRYPT"), "{anna}");
    assert!(anna.contains("quota_bytes: 524288000"), "{anna}");
    b.goto("/").await;
    assert!(
        b.text("table#legacy-schemes")
            .await
            .contains("SHA512-CRYPT"),
        "the dashboard counts the imported hash"
    );

    pop3_login(server.pop3, "anna@shop.example", "anna's old password").expect("anna");
    pop3_login(server.pop3, "bob@shop.example", "bob's brand new password").expect("bob");
    let anna = ok(server.cli(&["user", "show", "anna@shop.example"]));
    assert!(anna.contains("password_scheme: ARGON2ID"), "{anna}");
    b.goto("/").await;
    assert!(
        b.try_find("table#legacy-schemes").await.is_none(),
        "no imported hash is left"
    );
    b.quit().await;
}

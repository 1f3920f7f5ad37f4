//! The admin listener over real TCP: the bootstrap link, `pophost admin add`, sign-in (cookie
//! attributes, throttling, sign-out), security headers, HTTPS, the loopback-only rule for plain
//! HTTP, and "end session" reaching a live POP3 session on its frontend. Also the one
//! provisioning service seen from its three frontends: a limit typed in a form, sent to the API
//! or given to the CLI means the same, and CLI changes are in the audit log.

use std::time::{Duration, Instant};

use crate::harness::*;

const ADMIN: &str = "root@isp.example";
const ADMIN_PW: &str = "admin password 1";

fn add_super(server: &Server) {
    let out = server.cli(&["admin", "add", ADMIN, "--super", "--password", ADMIN_PW]);
    assert!(out.status.success(), "{}", show(&out));
}

fn bootstrap_link(server: &Server) -> Option<String> {
    let log = server.log.lock().expect("log").clone();
    let at = log.find("/bootstrap/")?;
    let token: String = log[at + 11..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    Some(format!("/bootstrap/{token}"))
}

#[test]
fn bootstrap_link_creates_the_first_super_admin_once() {
    let server = Server::start();
    let link = bootstrap_link(&server).expect("a fresh install prints a bootstrap link");
    let log = server.log.lock().expect("log").clone();
    assert!(
        log.contains("`pophost admin add EMAIL --super --password-stdin`"),
        "the other way the log offers is a command that works: {log}"
    );
    // A second browser opened the link too, before the first admin was made.
    let stale = http(server.admin, "GET", &link, &[], "");
    assert_eq!(stale.status, 200);
    let submit = |email: &str, password: &str| submit_sign_in(server.admin, &link, email, password);
    let short = submit(ADMIN, "short");
    assert_eq!(short.status, 422, "a short password is a form error");
    let made = submit(ADMIN, ADMIN_PW);
    assert_eq!(made.status, 303, "{}", made.body);
    assert!(
        made.cookie("__Host-pophost-session").is_some(),
        "signed in at once"
    );
    let pre = stale.cookie("__Host-pophost-pre").expect("pre");
    let second = http(
        server.admin,
        "POST",
        &link,
        &[
            ("Cookie", &format!("__Host-pophost-pre={pre}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form_body(&[
            ("email", "second@isp.example"),
            ("password", ADMIN_PW),
            ("_pre", &stale.hidden("_pre").expect("_pre")),
        ]),
    );
    assert_eq!(second.status, 404, "the link works once");
    assert_eq!(http(server.admin, "GET", &link, &[], "").status, 404);
    let admin = AdminHttp::sign_in(server.admin, ADMIN, ADMIN_PW);
    assert!(admin.get("/").body.contains("(super admin)"));

    // With an admin in the store, a restart prints no link.
    let again = Server::restart(server.kill9());
    assert_eq!(bootstrap_link(&again), None);
}

#[test]
fn cli_adds_super_and_domain_admins() {
    let server = Server::start();
    server.add_user("john@example.com");
    add_super(&server);
    let out = server.cli(&[
        "admin",
        "add",
        "boss@example.com",
        "--domain",
        "example.com",
        "--password",
        ADMIN_PW,
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(show(&out).contains("added admin boss@example.com of example.com"));
    let dup = server.cli(&["admin", "add", ADMIN, "--super", "--password", ADMIN_PW]);
    assert!(
        !dup.status.success() && show(&dup).contains("already exists"),
        "{}",
        show(&dup)
    );
    let missing = server.cli(&[
        "admin",
        "add",
        "x@example.com",
        "--domain",
        "nosuch.example",
        "--password",
        ADMIN_PW,
    ]);
    assert!(!missing.status.success());
    assert!(
        show(&missing).contains("nosuch.example"),
        "{}",
        show(&missing)
    );
    let neither = server.cli(&["admin", "add", "y@example.com", "--password", ADMIN_PW]);
    assert!(!neither.status.success(), "a role is required");

    // The domain admin signs in and sees their domain only.
    let boss = AdminHttp::sign_in(server.admin, "boss@example.com", ADMIN_PW);
    let dash = boss.get("/");
    assert!(!dash.body.contains("(super admin)"));
    assert_eq!(boss.get("/sessions").status, 200);
}

#[test]
fn sign_in_sets_a_strict_cookie_and_security_headers() {
    let server = Server::start();
    add_super(&server);
    let page = http(server.admin, "GET", "/signin", &[], "");
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));

    let first = AdminHttp::sign_in(server.admin, ADMIN, ADMIN_PW);
    let second = AdminHttp::sign_in(server.admin, ADMIN, ADMIN_PW);
    assert_ne!(
        first.cookie, second.cookie,
        "a new session id at every sign-in"
    );
    assert_ne!(first.csrf, second.csrf);
    // The raw Set-Cookie carries every attribute.
    let res = submit_sign_in(server.admin, "/signin", ADMIN, ADMIN_PW);
    let set = res
        .headers
        .iter()
        .find(|(k, v)| {
            k.eq_ignore_ascii_case("set-cookie") && v.starts_with("__Host-pophost-session=")
        })
        .map(|(_, v)| v.clone())
        .expect("session cookie");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(!set.contains("Domain="), "{set}");

    // Sign-out ends the session on the server, not just in the browser.
    let out = first.post("/signout", &[]);
    assert_eq!(out.status, 303);
    assert_eq!(
        first.get("/").status,
        303,
        "the old cookie no longer signs in"
    );
    assert_eq!(second.get("/").status, 200, "other sessions live on");
    let log = server.log.lock().expect("log").clone();
    assert!(
        !log.contains(ADMIN_PW),
        "the admin password is never logged"
    );
}

#[test]
fn failed_sign_ins_are_throttled_and_audited() {
    let server = Server::start();
    add_super(&server);
    let try_sign_in = |password: &str| submit_sign_in(server.admin, "/signin", ADMIN, password);
    for _ in 0..5 {
        assert_eq!(try_sign_in("wrong password").status, 401);
    }
    let refused = try_sign_in(ADMIN_PW);
    assert_eq!(
        refused.status, 429,
        "the right password is refused while throttled"
    );
    assert!(refused.cookie("__Host-pophost-session").is_none());
    let failures = server
        .data()
        .sql("SELECT count(*) FROM audit_log WHERE action = 'signin' AND NOT success");
    assert_eq!(failures, "6");
    // Without the double-submit token the form is refused outright.
    let res = http(
        server.admin,
        "POST",
        "/signin",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form_body(&[("email", ADMIN), ("password", ADMIN_PW)]),
    );
    assert_eq!(res.status, 403);
}

/// `submit_sign_in` as it reaches us through a reverse proxy: with `headers` added to the POST.
fn sign_in_with(server: &Server, headers: &[(&str, &str)], email: &str, password: &str) -> u16 {
    let form = http(server.admin, "GET", "/signin", &[], "");
    let pre = form.cookie("__Host-pophost-pre").expect("pre cookie");
    let cookie = format!("__Host-pophost-pre={pre}");
    let mut all = vec![
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    all.extend_from_slice(headers);
    let body = form_body(&[
        ("email", email),
        ("password", password),
        ("_pre", &form.hidden("_pre").expect("_pre field")),
    ]);
    http(server.admin, "POST", "/signin", &all, &body).status
}

#[test]
fn wrong_passwords_keep_out_only_their_address_behind_a_trusted_proxy() {
    // The documented setup: a TLS proxy on the same host, so every peer is 127.0.0.1.
    let server = Server::start_with_config("[admin]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\n");
    add_super(&server);
    const OTHER: &str = "other@isp.example";
    let out = server.cli(&["admin", "add", OTHER, "--super", "--password", ADMIN_PW]);
    assert!(out.status.success(), "{}", show(&out));
    // What the proxy appends after whatever the client sent.
    let x = [("X-Forwarded-For", "203.0.113.66, 192.0.2.10")];
    let y = [("X-Forwarded-For", "198.51.100.20")];
    for _ in 0..5 {
        assert_eq!(sign_in_with(&server, &x, ADMIN, "wrong password"), 401);
    }
    assert_eq!(
        sign_in_with(&server, &x, ADMIN, ADMIN_PW),
        429,
        "the address that failed is refused"
    );
    assert_eq!(
        sign_in_with(&server, &y, ADMIN, ADMIN_PW),
        303,
        "the right password from another address is not"
    );
    assert_eq!(
        sign_in_with(&server, &x, OTHER, ADMIN_PW),
        303,
        "nor another admin from the failing address"
    );
    let failed_from = |what: &str| {
        server.data().sql(&format!(
            "SELECT {what}(DISTINCT ip) FROM audit_log WHERE action = 'signin' AND NOT success"
        ))
    };
    assert_eq!(
        (failed_from("count"), failed_from("min")),
        ("1".into(), "192.0.2.10".into())
    );
}

#[test]
fn an_untrusted_peers_forwarded_for_is_ignored() {
    let server = Server::start_with_config("[admin]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    add_super(&server);
    // A client that names a new address with every guess is still 127.0.0.1.
    for i in 0..5 {
        let fake = format!("192.0.2.{i}");
        let fwd = format!("for={fake}");
        let headers = [
            ("X-Forwarded-For", fake.as_str()),
            ("Forwarded", fwd.as_str()),
        ];
        assert_eq!(
            sign_in_with(&server, &headers, ADMIN, "wrong password"),
            401
        );
    }
    let headers = [("X-Forwarded-For", "192.0.2.200")];
    assert_eq!(sign_in_with(&server, &headers, ADMIN, ADMIN_PW), 429);
    let ips = |what: &str| {
        server.data().sql(&format!(
            "SELECT {what}(DISTINCT ip) FROM audit_log WHERE action = 'signin'"
        ))
    };
    assert_eq!((ips("count"), ips("min")), ("1".into(), "127.0.0.1".into()));
}

#[test]
fn a_form_posted_through_the_https_proxy_is_accepted() {
    let server = Server::start_with_config(
        "[admin]\npublic_url = \"https://admin.isp.example\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    add_super(&server);
    // What a browser sends for our own form, as an HTTPS proxy passes it on (nginx's default
    // `Host` is the upstream's).
    let ours = [
        ("Origin", "https://admin.isp.example"),
        ("Sec-Fetch-Site", "same-origin"),
        ("X-Forwarded-For", "192.0.2.10"),
    ];
    assert_eq!(sign_in_with(&server, &ours, ADMIN, ADMIN_PW), 303);
    let theirs = [
        ("Origin", "https://evil.example"),
        ("X-Forwarded-For", "192.0.2.10"),
    ];
    assert_eq!(sign_in_with(&server, &theirs, ADMIN, ADMIN_PW), 403);
    let admin = AdminHttp::sign_in(server.admin, ADMIN, ADMIN_PW);
    let res = http(
        server.admin,
        "POST",
        "/domains",
        &[
            (
                "Cookie",
                &format!("__Host-pophost-session={}", admin.cookie),
            ),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "https://admin.isp.example"),
        ],
        &form_body(&[("name", "shop.example"), ("_csrf", &admin.csrf)]),
    );
    assert_eq!(res.status, 303, "{}", res.body);
    assert!(show(&server.cli(&["domain", "list"])).contains("shop.example"));
}

#[test]
fn cli_admin_passwords_follow_the_bootstrap_forms_rule() {
    let server = Server::start();
    let link = bootstrap_link(&server).expect("bootstrap link");
    let page = submit_sign_in(server.admin, &link, ADMIN, "eleven char");
    assert_eq!(page.status, 422);
    for short in ["x", "eleven char"] {
        let out = server.cli_stdin(
            &[
                "admin",
                "add",
                "x@isp.example",
                "--super",
                "--password-stdin",
            ],
            &format!("{short}\n"),
        );
        assert!(!out.status.success(), "{short:?} accepted: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr.trim().trim_start_matches("error: ");
        assert!(
            message.contains("12 characters") && page.body.contains(message),
            "the CLI says {message:?}; the form: {}",
            page.body
        );
    }
    assert_eq!(server.data().sql("SELECT count(*) FROM admins"), "0");
    // The command the start-up log suggests, as it stands.
    let log = server.log.lock().expect("log").clone();
    let at = log.find("`pophost ").expect("a suggested command") + 9;
    let command = &log[at..at + log[at..].find('`').expect("closing backtick")];
    let args: Vec<&str> = command
        .split_whitespace()
        .map(|w| if w == "EMAIL" { "x@isp.example" } else { w })
        .collect();
    let out = server.cli_stdin(&args, "twelve chars\n");
    assert!(out.status.success(), "{command}: {}", show(&out));
    assert_eq!(server.data().sql("SELECT count(*) FROM admins"), "1");
}

#[test]
fn ending_a_session_in_the_ui_closes_it_on_its_frontend_and_deletes_nothing() {
    // Leases renew every second, so a broken lock is noticed within about a second.
    let server = Server::start_with_config("[locks]\nttl_secs = 3\n");
    server.add_user("john@example.com");
    add_super(&server);
    deliver(&server, "john@example.com", &message("keep me"));
    let mut pop = Pop3::login(server.pop3, "john@example.com");
    assert!(pop.cmd("DELE 1").starts_with("+OK"));

    let admin = AdminHttp::sign_in(server.admin, ADMIN, ADMIN_PW);
    let page = admin.get("/sessions");
    assert!(page.body.contains("john@example.com"), "{}", page.body);
    let ended = admin.post("/sessions/john@example.com/end", &[]);
    assert_eq!(ended.status, 303);

    let t = Instant::now();
    let line = pop
        .try_line()
        .expect("the server says why it ends the session");
    assert!(line.starts_with("-ERR [SYS/TEMP]"), "{line}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(pop.closed());
    let mut again = Pop3::login(server.pop3, "john@example.com");
    assert_eq!(
        again.stat().0,
        1,
        "the DELE of the ended session was not applied"
    );
    assert_eq!(
        server
            .data()
            .sql("SELECT count(*) FROM audit_log WHERE action = 'session.end' AND object = 'john@example.com' AND success"),
        "1"
    );
}

#[test]
fn plain_http_admin_is_refused_off_loopback() {
    let data = Data::new().with_config("[admin]\nlisten = \"0.0.0.0:0\"\n");
    // The config is refused at load, before any port is bound.
    let out = data.cli(&["serve"]);
    assert!(!out.status.success());
    assert!(show(&out).contains("admin.tls"), "{}", show(&out));
}

#[test]
fn admin_ui_over_https() {
    let server = Server::start_with_config("[admin]\ntls = true\n");
    let url = format!("https://{}/healthz", server.admin);
    let out = std::process::Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", &url])
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let plain = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://{}/healthz", server.admin),
        ])
        .output()
        .expect("curl");
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("ok"),
        "no plain HTTP on the TLS listener"
    );
    assert!(
        bootstrap_link(&server).is_some_and(|_| server
            .log
            .lock()
            .expect("log")
            .contains("https://"))
    );
}

#[test]
fn health_and_readiness() {
    let server = Server::start();
    assert_eq!(http(server.admin, "GET", "/healthz", &[], "").status, 200);
    let ready = http(server.admin, "GET", "/readyz", &[], "");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
}

#[test]
fn disabled_accounts_and_domains_cannot_log_in_but_receive_mail() {
    let server = Server::start();
    server.add_user("john@example.com");
    let ok = |args: &[&str]| {
        let out = server.cli(args);
        assert!(out.status.success(), "{}", show(&out));
    };
    let refused = |user: &str| {
        let mut c = Pop3::connect(server.pop3);
        assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
        let pass = c.cmd(&format!("PASS {PASSWORD}"));
        assert!(pass.starts_with("-ERR [AUTH]"), "{pass}");
        // SASL PLAIN is refused the same way.
        use base64::Engine;
        let blob =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
        let auth = c.cmd(&format!("AUTH PLAIN {blob}"));
        assert!(auth.starts_with("-ERR"), "{auth}");
    };
    ok(&["user", "set", "john@example.com", "--enabled", "false"]);
    refused("john@example.com");
    deliver(&server, "john@example.com", &message("still delivered"));
    ok(&["user", "set", "john@example.com", "--enabled", "true"]);
    assert_eq!(Pop3::login(server.pop3, "john@example.com").stat().0, 1);

    ok(&["domain", "set", "example.com", "--enabled", "false"]);
    refused("john@example.com");
    ok(&[
        "domain",
        "set",
        "example.com",
        "--enabled",
        "true",
        "--max-users",
        "1",
    ]);
    let full = server.cli(&["user", "add", "jane@example.com", "--password", PASSWORD]);
    assert!(!full.status.success());
    assert!(show(&full).contains("limit of 1 users"), "{}", show(&full));
    assert_eq!(Pop3::login(server.pop3, "john@example.com").stat().0, 1);
}

/// A new API token of `admin`, from the token page (the only place it is ever shown).
fn api_token(admin: &AdminHttp) -> String {
    let page = admin.post("/tokens", &[("name", "e2e")]);
    assert_eq!(page.status, 200, "{}", page.body);
    let at = page.body.find("id=\"new-token\">").expect("the new token") + 15;
    page.body[at..at + page.body[at..].find('<').expect("end of token")].to_string()
}

/// `METHOD /api/v1PATH` with a bearer token and a JSON body.
fn api(server: &Server, token: &str, method: &str, path: &str, body: &str) -> HttpResponse {
    http(
        server.admin,
        method,
        &format!("/api/v1{path}"),
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

/// A user's stored quota as the API shows it: (bytes, messages), `null` for no limit.
fn stored_quota(server: &Server, token: &str, address: &str) -> (String, String) {
    let (local, domain) = address.split_once('@').expect("an address");
    let r = api(
        server,
        token,
        "GET",
        &format!("/domains/{domain}/users/{local}"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let field = |name: &str| {
        let at = r.body.find(&format!("\"{name}\":")).expect(name) + name.len() + 3;
        r.body[at..]
            .split([',', '}'])
            .next()
            .expect("a value")
            .to_string()
    };
    (field("quota_bytes"), field("quota_messages"))
}

#[test]
fn a_limit_means_the_same_in_the_form_the_api_and_the_cli() {
    let server = Server::start();
    add_super(&server);
    for user in ["form", "api", "cli"] {
        server.add_user(&format!("{user}@example.com"));
    }
    let admin = AdminHttp::sign_in(server.admin, ADMIN, ADMIN_PW);
    let token = api_token(&admin);
    // Bytes take binary suffixes, messages decimal ones; either case, a space before the
    // suffix, and "unlimited" in any case are read alike everywhere.
    let cases = [
        ("10K", "10K", "10240", "10000"),
        ("500M", "2m", "524288000", "2000000"),
        ("1g", "unlimited", "1073741824", "null"),
        ("2 K", "7", "2048", "7"),
        ("UNLIMITED", "0", "null", "0"),
    ];
    for (bytes, messages, want_bytes, want_messages) in cases {
        let form = admin.post(
            "/domains/example.com/users/form",
            &[("quota_bytes", bytes), ("quota_messages", messages)],
        );
        assert_eq!(
            form.status, 303,
            "form {bytes:?} {messages:?}: {}",
            form.body
        );
        let body = format!("{{\"quota_bytes\":\"{bytes}\",\"quota_messages\":\"{messages}\"}}");
        let r = api(
            &server,
            &token,
            "PATCH",
            "/domains/example.com/users/api",
            &body,
        );
        assert_eq!(r.status, 200, "API {body}: {}", r.body);
        let out = server.cli(&[
            "user",
            "set",
            "cli@example.com",
            "--quota-bytes",
            bytes,
            "--quota-messages",
            messages,
        ]);
        assert!(
            out.status.success(),
            "CLI {bytes:?} {messages:?}: {}",
            show(&out)
        );
        let want = (want_bytes.to_string(), want_messages.to_string());
        for user in ["form", "api", "cli"] {
            let address = format!("{user}@example.com");
            assert_eq!(
                stored_quota(&server, &token, &address),
                want,
                "{user}: {bytes:?} {messages:?}"
            );
        }
    }
    // And what one refuses, all refuse.
    for bad in ["5T", "+5", "1.5G", "ten"] {
        let form = admin.post(
            "/domains/example.com/users/form",
            &[("quota_bytes", bad), ("quota_messages", "")],
        );
        assert_eq!(form.status, 422, "form {bad:?}");
        let body = format!("{{\"quota_bytes\":\"{bad}\"}}");
        let r = api(
            &server,
            &token,
            "PATCH",
            "/domains/example.com/users/api",
            &body,
        );
        assert_eq!(r.status, 422, "API {bad:?}: {}", r.body);
        let out = server.cli(&["user", "set", "cli@example.com", "--quota-bytes", bad]);
        assert!(!out.status.success(), "CLI {bad:?}");
    }
}

#[test]
fn cli_changes_are_in_the_audit_log_as_cli() {
    let server = Server::start();
    let cli_ok = |args: &[&str]| {
        let out = server.cli(args);
        assert!(out.status.success(), "{args:?}: {}", show(&out));
    };
    cli_ok(&["domain", "add", "example.com"]);
    cli_ok(&[
        "domain",
        "set",
        "example.com",
        "--quota-bytes",
        "1G",
        "--retention-days",
        "30",
    ]);
    cli_ok(&["domain", "alias", "add", "example.net", "example.com"]);
    cli_ok(&["domain", "alias", "remove", "example.net"]);
    cli_ok(&["user", "add", "john@example.com", "--password", PASSWORD]);
    cli_ok(&["user", "set", "john@example.com", "--quota-messages", "10K"]);
    cli_ok(&[
        "user",
        "passwd",
        "john@example.com",
        "--password",
        "another password",
    ]);
    cli_ok(&["user", "set", "john@example.com", "--enabled", "false"]);
    cli_ok(&["user", "remove", "john@example.com"]);
    cli_ok(&["admin", "add", ADMIN, "--super", "--password", ADMIN_PW]);
    cli_ok(&["domain", "remove", "example.com"]);
    // One row at a time: the harness's SQL client returns one value, on either backend.
    let rows: usize = server
        .data()
        .sql("SELECT count(*) FROM audit_log")
        .parse()
        .expect("a count");
    let log: Vec<String> = (0..rows)
        .map(|i| {
            server.data().sql(&format!(
                "SELECT actor || ' ' || action || ' ' || object FROM audit_log ORDER BY id LIMIT 1 OFFSET {i}"
            ))
        })
        .collect();
    assert_eq!(
        log,
        [
            "cli domain.create example.com",
            "cli domain.policies example.com",
            "cli domain.update example.com",
            "cli domain.alias.add example.com",
            "cli domain.alias.remove example.com",
            "cli user.create john@example.com",
            "cli user.update john@example.com",
            "cli user.password john@example.com",
            "cli user.disable john@example.com",
            "cli user.delete john@example.com",
            "cli admin.create root@isp.example",
            "cli domain.delete example.com",
        ]
    );
    // Before and after, as the admin UI records them: the change is in the record.
    let update = server.data().sql(
        "SELECT after FROM audit_log WHERE action = 'user.update' AND object = 'john@example.com'",
    );
    assert!(update.contains("\"quota_messages\":10000"), "{update}");
    // The audit page shows them to a super admin.
    let admin = AdminHttp::sign_in(server.admin, ADMIN, ADMIN_PW);
    let page = admin.get("/audit");
    assert!(page.body.contains("user.create"), "{}", page.body);
}

//! What a customer did, end to end: real POP3 sessions (a good login with RETR, DELE and QUIT,
//! a wrong password, a disabled account, a login over POP3S) against the real binary, then
//! what the user page shows a signed-in admin and what `pophost user show` prints.

use std::process::Command;

use crate::harness::*;

const JOHN: &str = "john@example.com";
const ADMIN: &str = "root@isp.example";
const ADMIN_PW: &str = "admin password 1";

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(out.status.success(), "{args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn refused(server: &Server, password: &str) -> String {
    let mut c = Pop3::connect(server.pop3);
    assert!(c.cmd(&format!("USER {JOHN}")).starts_with("+OK"));
    let reply = c.cmd(&format!("PASS {password}"));
    c.cmd("QUIT");
    reply
}

#[test]
fn the_user_page_shows_logins_failures_and_transfers() {
    let s = Server::start();
    s.add_user(JOHN);
    deliver(&s, JOHN, &message("first"));
    deliver(&s, JOHN, &message("second"));

    // A good login over plain POP3 (loopback may send passwords in the clear).
    let mut c = Pop3::login(s.pop3, JOHN);
    let (ok, _) = c.fetch("RETR 1");
    assert!(ok.starts_with("+OK"), "{ok}");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let wrong = refused(&s, "not the password");
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    cli_ok(&s, &["user", "set", JOHN, "--enabled", "false"]);
    let disabled = refused(&s, PASSWORD);
    assert!(
        disabled.starts_with("-ERR [AUTH]"),
        "a disabled account answers as any failure: {disabled}"
    );
    cli_ok(&s, &["user", "set", JOHN, "--enabled", "true"]);

    // The last login: over POP3S, by curl.
    let user = format!("{JOHN}:{PASSWORD}");
    let out = Command::new("timeout")
        .args(["60", "curl", "-sS", "--insecure", "--user", &user])
        .arg(format!("pop3s://{}/", s.pop3s))
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl: {}", show(&out));

    cli_ok(
        &s,
        &["admin", "add", ADMIN, "--super", "--password", ADMIN_PW],
    );
    let admin = AdminHttp::sign_in(s.admin, ADMIN, ADMIN_PW);
    let page = admin.get("/domains/example.com/users/john");
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    let section = body
        .split(r#"<section id="activity""#)
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .unwrap_or_else(|| panic!("no activity section: {body}"));
    let last_login = section
        .split(r#"<p id="last-login">"#)
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .expect("last login");
    assert!(
        last_login.contains(r#"<span class="client">127.0.0.1</span>"#),
        "{last_login}"
    );
    assert!(
        last_login.contains(r#"<span class="tls">TLS</span>"#),
        "{last_login}"
    );
    for piece in [
        r#"<table id="logins">"#,
        r#"<td class="mechanism">USER</td>"#,
        "failed: wrong password",
        "failed: account disabled",
        r#"<span id="deleted">1 message ("#,
    ] {
        assert!(section.contains(piece), "{piece} in {section}");
    }
    // RETR 1 is counted; curl's listing retrieved nothing.
    assert!(
        section.contains(r#"<span id="retrieved">1 message ("#),
        "{section}"
    );
    assert!(!section.contains("Last delivery: never"), "{section}");
    // Newest first: curl's TLS login, the disabled account, the wrong password, the USER login.
    let rows: Vec<&str> = section.split(r#"<tr class="login-"#).skip(1).collect();
    assert_eq!(rows.len(), 4, "{section}");
    assert!(rows[0].starts_with("ok"), "{}", rows[0]);
    assert!(
        rows[0].contains(r#"<td class="tls">yes</td>"#),
        "{}",
        rows[0]
    );
    assert!(rows[1].contains("account disabled"), "{}", rows[1]);
    assert!(rows[2].contains("wrong password"), "{}", rows[2]);
    assert!(rows[3].starts_with("ok"), "{}", rows[3]);
    assert!(
        rows[3].contains(r#"<td class="tls">no</td>"#),
        "{}",
        rows[3]
    );

    let shown = cli_ok(&s, &["user", "show", JOHN]);
    assert!(shown.contains("last_login: 20"), "{shown}");
    assert!(shown.contains("from 127.0.0.1 ("), "{shown}");
    assert!(shown.contains(", TLS)"), "{shown}");
    assert!(
        shown.contains("retrieved_30d: messages=1 bytes="),
        "{shown}"
    );
    assert!(shown.contains("deleted_30d: messages=1 bytes="), "{shown}");
}

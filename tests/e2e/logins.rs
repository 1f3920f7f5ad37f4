//! Login forms over POP3: `user@domain`, the SDPS forms `user%domain` and `user+domain`, bare
//! logins with a per-listener default domain, domain aliases (for login and delivery), per-domain
//! login forms, and the `pophost login explain` dry run.

use crate::harness::*;

const JOHN: &str = "john@example.com";

fn logs_in(server: &Server, login: &str) -> Result<(), String> {
    let mut c = Pop3::connect(server.pop3);
    assert!(c.cmd(&format!("USER {login}")).starts_with("+OK"));
    let r = c.cmd(&format!("PASS {PASSWORD}"));
    c.cmd("QUIT");
    if r.starts_with("+OK") { Ok(()) } else { Err(r) }
}

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn every_login_form_reaches_the_same_mailbox() {
    let s = Server::start();
    s.add_user(JOHN);
    for login in [
        JOHN,
        "JOHN@Example.COM",
        "john%example.com",
        "john+example.com",
    ] {
        assert_eq!(logs_in(&s, login), Ok(()), "{login}");
    }
    let bare = logs_in(&s, "john").expect_err("bare login without a default domain");
    assert!(bare.starts_with("-ERR [AUTH]"), "{bare}");

    // The domain restricts its forms: the others fail exactly like a wrong password.
    cli_ok(&s, &["domain", "set", "example.com", "--login-forms", "at"]);
    assert_eq!(logs_in(&s, JOHN), Ok(()));
    for login in ["john%example.com", "john+example.com"] {
        let r = logs_in(&s, login).expect_err(login);
        assert!(r.starts_with("-ERR [AUTH]"), "{login}: {r}");
    }
    let bad = s.cli(&["domain", "set", "example.com", "--login-forms", "email"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown login form"));
}

#[test]
fn bare_logins_take_the_listeners_default_domain() {
    let s = Server::start_with_config("[auth.default_domains]\n\"127.0.0.1\" = \"example.com\"\n");
    s.add_user(JOHN);
    assert_eq!(logs_in(&s, "john"), Ok(()));
    assert_eq!(logs_in(&s, "John"), Ok(()));
    cli_ok(
        &s,
        &["domain", "set", "example.com", "--login-forms", "at,plus"],
    );
    assert!(
        logs_in(&s, "john").is_err(),
        "bare logins switched off for the domain"
    );
}

#[test]
fn aliases_work_for_login_and_delivery() {
    let s = Server::start();
    s.add_user(JOHN);
    cli_ok(
        &s,
        &["domain", "alias", "add", "Example.NET", "example.com"],
    );
    assert!(cli_ok(&s, &["domain", "alias", "list"]).contains("example.net -> example.com"));
    assert_eq!(logs_in(&s, "john@example.net"), Ok(()));
    assert_eq!(logs_in(&s, "john+example.net"), Ok(()));
    deliver(&s, "John@example.net", &message("via alias"));
    let mut c = Pop3::login(s.pop3, JOHN);
    let (_, body) = c.fetch("RETR 1");
    assert!(String::from_utf8_lossy(&body).contains("Subject: via alias"));
    c.cmd("QUIT");
    let clash = s.cli(&["domain", "add", "example.net"]);
    assert!(!clash.status.success(), "an alias cannot also be a domain");
    cli_ok(&s, &["domain", "alias", "remove", "example.net"]);
    assert!(logs_in(&s, "john@example.net").is_err());
}

/// The log names the mailbox a login reached, not the alias it was typed with: the session
/// summary of a login through an alias domain carries the canonical address and tenant.
#[test]
fn a_login_through_an_alias_is_logged_under_the_canonical_domain() {
    let s = Server::start();
    s.add_user(JOHN);
    cli_ok(
        &s,
        &["domain", "alias", "add", "example.net", "example.com"],
    );
    for login in ["john@example.net", "john+example.net"] {
        let mut c = Pop3::connect(s.pop3);
        c.cmd(&format!("USER {login}"));
        assert!(
            c.cmd(&format!("PASS {PASSWORD}")).starts_with("+OK"),
            "{login}"
        );
        c.cmd("QUIT");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let summaries = loop {
        let log = s.log.lock().expect("log").clone();
        let summaries: Vec<String> = log
            .lines()
            .filter(|l| l.contains("session summary") && l.contains("end=\"quit\""))
            .map(str::to_owned)
            .collect();
        if summaries.len() == 2 {
            break summaries;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected two session summaries:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for line in summaries {
        assert!(
            line.contains("user=\"john@example.com\"") && line.contains("tenant=example.com"),
            "{line}"
        );
        assert!(!line.contains("example.net"), "{line}");
    }
}

#[test]
fn login_explain_shows_each_step() {
    let s = Server::start_with_config("[auth.default_domains]\n\"192.0.2.7\" = \"example.com\"\n");
    s.add_user(JOHN);
    cli_ok(
        &s,
        &["domain", "alias", "add", "example.net", "example.com"],
    );
    let explain = |args: &[&str]| cli_ok(&s, &[&["login", "explain"][..], args].concat());
    let out = explain(&["john+example.net"]);
    assert!(
        out.contains("form: plus")
            && out.contains("mailbox: john@example.com (via alias example.net)")
            && out.contains("user exists"),
        "{out}"
    );
    let out = explain(&["jane%example.com"]);
    assert!(
        out.contains("form: percent") && out.contains("user does not exist"),
        "{out}"
    );
    let out = explain(&["john"]);
    assert!(out.contains("no domain"), "{out}");
    let out = explain(&["john", "--listener", "192.0.2.7"]);
    assert!(
        out.contains("mailbox: john@example.com") && out.contains("form: bare"),
        "{out}"
    );
    let out = explain(&["john", "--listener", "192.0.2.7", "--sni", "other.example"]);
    assert!(
        out.contains("no such domain"),
        "SNI wins over the listener: {out}"
    );
    cli_ok(&s, &["domain", "set", "example.com", "--login-forms", "at"]);
    let out = explain(&["john%example.com"]);
    assert!(
        out.contains("refused: example.com does not accept percent logins"),
        "{out}"
    );
    let out = explain(&["@@"]);
    assert!(out.contains("not a login"), "{out}");
}

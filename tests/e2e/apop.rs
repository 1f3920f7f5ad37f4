//! APOP (RFC 1939 §7): off by default (no timestamp in the greeting, `APOP` refused); with
//! `pop3.apop = true` a per-connection timestamp, logins with a secret set by `pophost user apop`
//! in domains that allow it, every failure answered alike, the secret encrypted at rest, and
//! fetchmail's `protocol apop` against it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::harness::{self, PASSWORD, Pop3, Server, show, write_private};

const USER: &str = "john@example.com";
const SECRET: &str = "tanstaaf apop secret";
const APOP_ON: &str = "[pop3]\napop = true\n";

/// Runs a `pophost` subcommand on `server`'s store and requires it to succeed.
fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(
        out.status.success(),
        "pophost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// An APOP server with `USER` holding `SECRET` in a domain that allows APOP.
fn apop_server() -> Server {
    let server = Server::start_with_config(APOP_ON);
    server.add_user(USER);
    cli_ok(
        &server,
        &["domain", "set", "example.com", "--allow-apop", "true"],
    );
    cli_ok(&server, &["user", "apop", USER, "--secret", SECRET]);
    server
}

/// The `<…>` timestamp of a greeting, if it has one.
fn timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let end = greeting[start..].find('>')? + start;
    Some(&greeting[start..=end])
}

/// Connects and sends `APOP name digest(secret)` against the greeting's timestamp.
pub(crate) fn apop(server: &Server, name: &str, secret: &str) -> (Pop3, String) {
    let (mut c, greeting) = Pop3::connect_greeting(server.pop3);
    let ts = timestamp(&greeting).unwrap_or_else(|| panic!("no timestamp: {greeting}"));
    let digest = tenancy::apop::digest_hex(ts, secret.as_bytes());
    let reply = c.cmd(&format!("APOP {name} {digest}"));
    (c, reply)
}

#[test]
fn apop_is_off_by_default() {
    let server = Server::start();
    server.add_user(USER);
    cli_ok(
        &server,
        &["domain", "set", "example.com", "--allow-apop", "true"],
    );
    cli_ok(&server, &["user", "apop", USER, "--secret", SECRET]);
    let (mut c, greeting) = Pop3::connect_greeting(server.pop3);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert!(
        !greeting.contains('<') && !greeting.contains('>'),
        "a timestamp while APOP is off: {greeting}"
    );
    let digest = tenancy::apop::digest_hex("<1896.697170952@dbc.mtview.ca.us>", SECRET.as_bytes());
    let r = c.cmd(&format!("APOP {USER} {digest}"));
    assert!(r.starts_with("-ERR"), "{r}");
    // The session goes on in AUTHORIZATION.
    assert!(c.cmd(&format!("USER {USER}")).starts_with("+OK"));
    assert!(c.cmd(&format!("PASS {PASSWORD}")).starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn apop_logs_in_with_the_secret() {
    let server = apop_server();
    harness::deliver(&server, USER, &harness::message("apop one"));
    let (mut c, greeting) = Pop3::connect_greeting(server.pop3);
    let ts = timestamp(&greeting).unwrap_or_else(|| panic!("no timestamp: {greeting}"));
    assert!(greeting.starts_with("+OK pophost ready <"), "{greeting}");
    assert!(
        ts.contains('@') && !ts[1..ts.len() - 1].contains(['<', '>', ' ']),
        "{ts}"
    );
    let digest = tenancy::apop::digest_hex(ts, SECRET.as_bytes());
    let r = c.cmd(&format!("APOP {USER} {}", digest.to_uppercase()));
    assert!(r.starts_with("+OK"), "{r}");
    assert_eq!(c.stat().0, 1);
    assert!(
        c.cmd("APOP x 00000000000000000000000000000000")
            .starts_with("-ERR")
    );
    assert!(c.cmd("QUIT").starts_with("+OK"));

    // Each connection gets its own timestamp.
    let (_, g1) = Pop3::connect_greeting(server.pop3);
    let (_, g2) = Pop3::connect_greeting(server.pop3);
    assert_ne!(timestamp(&g1), timestamp(&g2));

    // Login forms resolve as for USER.
    let (mut c, r) = apop(&server, "john%example.com", SECRET);
    assert!(r.starts_with("+OK"), "{r}");
    assert!(c.cmd("QUIT").starts_with("+OK"));

    // A digest made for another connection's timestamp does not work here (no replay).
    let old = tenancy::apop::digest_hex(timestamp(&g1).expect("ts"), SECRET.as_bytes());
    let (mut c, _) = Pop3::connect_greeting(server.pop3);
    let r = c.cmd(&format!("APOP {USER} {old}"));
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
}

#[test]
fn apop_failures_look_alike() {
    let server = apop_server();
    // Same domain, no secret.
    server.add_user("mary@example.com");
    // A secret, but a domain that does not allow APOP.
    server.add_user("bob@example.org");
    cli_ok(
        &server,
        &["user", "apop", "bob@example.org", "--secret", SECRET],
    );
    // A secret cleared again.
    server.add_user("carol@example.com");
    cli_ok(
        &server,
        &["user", "apop", "carol@example.com", "--secret", SECRET],
    );
    cli_ok(&server, &["user", "apop", "carol@example.com", "--clear"]);

    let cases = [
        (USER, "wrong secret"),
        ("mary@example.com", SECRET),
        ("bob@example.org", SECRET),
        ("carol@example.com", SECRET),
        ("nobody@example.com", SECRET),
        ("nobody@nowhere.example", SECRET),
        ("@@not-a-login", SECRET),
    ];
    let mut replies = Vec::new();
    for (name, secret) in cases {
        let (mut c, r) = apop(&server, name, secret);
        assert!(r.starts_with("-ERR [AUTH]"), "{name}: {r}");
        replies.push(r);
        // The session goes on.
        let r = c.cmd("CAPA");
        c.multi();
        assert!(r.starts_with("+OK"), "{name}: {r}");
    }
    let first = &replies[0];
    assert!(replies.iter().all(|r| r == first), "{replies:#?}");
    // USER/PASS and APOP failures say the same.
    let mut c = Pop3::connect(server.pop3);
    assert!(c.cmd("USER nobody@example.com").starts_with("+OK"));
    assert_eq!(&c.cmd("PASS x"), first);

    // Allowing the domain lets bob in.
    cli_ok(
        &server,
        &["domain", "set", "example.org", "--allow-apop", "true"],
    );
    let (_, r) = apop(&server, "bob@example.org", SECRET);
    assert!(r.starts_with("+OK"), "{r}");
    // And disallowing it again shuts john out.
    cli_ok(
        &server,
        &["domain", "set", "example.com", "--allow-apop", "false"],
    );
    let (_, r) = apop(&server, USER, SECRET);
    assert_eq!(&r, first);
}

#[test]
fn the_apop_secret_is_encrypted_at_rest() {
    let server = apop_server();
    server.add_user("mary@example.com");
    let stored = server
        .data()
        .sql("SELECT apop_secret FROM users WHERE localpart = 'john'");
    assert!(!stored.is_empty(), "no secret stored");
    assert!(
        !stored.contains(SECRET) && !stored.contains("tanstaaf"),
        "{stored}"
    );
    let key = server.data().dir.join("apop.key");
    let meta = fs::metadata(&key).expect("the key file was made");
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // The sealed secret copied onto another user does not open for them.
    server.data().sql(
        "UPDATE users SET apop_secret = (SELECT apop_secret FROM users WHERE localpart = 'john') \
         WHERE localpart = 'mary'",
    );
    let (_, r) = apop(&server, "mary@example.com", SECRET);
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    let (_, r) = apop(&server, USER, SECRET);
    assert!(r.starts_with("+OK"), "{r}");
}

#[test]
fn apop_cli_needs_a_user_and_a_secret() {
    let server = Server::start_with_config(APOP_ON);
    server.add_user(USER);
    let out = server.cli(&["user", "apop", "nobody@example.com", "--secret", "x"]);
    assert!(!out.status.success());
    let out = server.cli(&["user", "apop", USER]);
    assert!(
        !out.status.success(),
        "one of --secret, --secret-stdin, --clear"
    );
    let out = server.cli(&["user", "apop", USER, "--secret", "x", "--clear"]);
    assert!(!out.status.success());
    let out = server.cli(&["domain", "set", "example.com", "--allow-apop", "maybe"]);
    assert!(!out.status.success());
    let out = server.cli(&["domain", "set", "nowhere.example", "--allow-apop", "true"]);
    assert!(!out.status.success());
    // --secret-stdin reads one line.
    let mut child = server
        .data()
        .command()
        .args(["user", "apop", USER, "--secret-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pophost");
    std::io::Write::write_all(
        child.stdin.as_mut().expect("stdin"),
        format!("{SECRET}\n").as_bytes(),
    )
    .expect("write secret");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("does not allow APOP"),
        "warns that the domain does not allow APOP yet"
    );
    cli_ok(
        &server,
        &["domain", "set", "example.com", "--allow-apop", "true"],
    );
    let (_, r) = apop(&server, USER, SECRET);
    assert!(r.starts_with("+OK"), "{r}");
}

#[test]
fn fetchmail_protocol_apop() {
    let server = apop_server();
    harness::deliver(&server, USER, &harness::message("fetched by apop"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    let outfile = home.join("delivered");
    let rc = home.join("fetchmailrc");
    write_private(
        &rc,
        &format!(
            "set no syslog\n\
             poll 127.0.0.1 service {port} protocol apop\n  \
             user \"{USER}\" password \"{SECRET}\"\n  \
             sslproto ''\n  keep\n  \
             mda \"/bin/sh -c 'cat >> {out}'\"\n",
            port = server.pop3.port(),
            out = outfile.display()
        ),
    );
    let out = Command::new("timeout")
        .args(["60", "fetchmail", "-f"])
        .arg(&rc)
        .arg("--idfile")
        .arg(home.join("fetchids"))
        .arg("--pidfile")
        .arg(home.join("fetchmail.pid"))
        .args(["--nodetach", "-v"])
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run fetchmail");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let got = fs::read_to_string(&outfile).unwrap_or_default();
    assert!(
        got.contains("Subject: fetched by apop"),
        "{got}\n{}",
        show(&out)
    );
    assert!(
        show(&out).contains("APOP "),
        "fetchmail did not use APOP: {}",
        show(&out)
    );
}

#[test]
fn apop_failures_count_against_the_network_like_password_failures() {
    let server = Server::start_with_config(&format!("{APOP_ON}[auth]\nfailure_delay_ms = 300\n"));
    server.add_user(USER);
    cli_ok(
        &server,
        &["domain", "set", "example.com", "--allow-apop", "true"],
    );
    cli_ok(&server, &["user", "apop", USER, "--secret", SECRET]);
    let started = std::time::Instant::now();
    let (_, r) = apop(&server, USER, "wrong");
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "a failed APOP waits the failure delay"
    );
    for _ in 0..4 {
        let (_, r) = apop(&server, USER, "wrong");
        assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    }
    // Five failures of this account from this address: the next attempt waits 1 s, APOP or PASS
    // alike.
    let started = std::time::Instant::now();
    let (_, r) = apop(&server, USER, SECRET);
    assert!(r.starts_with("+OK"), "{r}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn curl_apop_over_pop3s() {
    let server = apop_server();
    harness::deliver(&server, USER, &harness::message("curl by apop"));
    let out = Command::new("timeout")
        .args([
            "60",
            "curl",
            "-sS",
            "-v",
            "--insecure",
            "--login-options",
            "AUTH=+APOP",
        ])
        .arg("--user")
        .arg(format!("{USER}:{SECRET}"))
        .arg(format!("pop3s://127.0.0.1:{}/1", server.pop3s.port()))
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Subject: curl by apop"),
        "{}",
        show(&out)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("> APOP "), "curl did not use APOP: {log}");
    assert!(log.contains("+OK pophost ready <"), "POP3S greeting: {log}");
}

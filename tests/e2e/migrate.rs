//! `pophost migrate pop3` (issue "Migration", item 3): mailboxes copied from a real Dovecot over
//! POP3S and STLS keep every UIDL, so mpop and fetchmail, having fetched everything from
//! Dovecot and left it there, download nothing again from pophost; a second run reads nothing
//! it already has; the batch form reports each account and fails the run when one fails;
//! plain POP3 and a certificate from an untrusted CA are refused.

use std::fs;
use std::net::SocketAddr;
use std::process::Output;

use crate::dovecot::{Dovecot, fetchmail, mpop};
use crate::harness::{PASSWORD, Pop3, Server, message, show};

const JOHN: &str = "john@example.com";
const MARY: &str = "mary@example.com";
/// Mary's password on the old server (hers on pophost is `PASSWORD`).
const MARY_OLD: &str = "mary's old one";

fn login(addr: SocketAddr, user: &str, password: &str) -> Pop3 {
    let mut c = Pop3::connect(addr);
    assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
    let r = c.cmd(&format!("PASS {password}"));
    assert!(r.starts_with("+OK"), "login {user} at {addr}: {r}");
    c
}

/// The raw UIDL listing, `n uidl` per message.
fn uidls(addr: SocketAddr, user: &str, password: &str) -> Vec<String> {
    let mut c = login(addr, user, password);
    assert!(c.cmd("UIDL").starts_with("+OK"));
    let lines = c.multi();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    lines
}

/// Every message as RETR sends it, unstuffed.
fn messages(addr: SocketAddr, user: &str, password: &str) -> Vec<Vec<u8>> {
    let mut c = login(addr, user, password);
    let (n, _) = c.stat();
    let all = (1..=n)
        .map(|i| {
            let (status, body) = c.fetch(&format!("RETR {i}"));
            assert!(status.starts_with("+OK"), "{status}");
            body
        })
        .collect();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    all
}

/// `pophost migrate pop3 ARGS`, with `stdin` on standard input.
fn migrate(s: &Server, args: &[&str], stdin: &str) -> Output {
    s.cli_stdin(&[&["migrate", "pop3"][..], args].concat(), stdin)
}

/// The report line of `account` (an address, or `line N`) in `out`'s standard output.
fn report_line(out: &Output, account: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(account))
        .unwrap_or_else(|| panic!("no report line for {account}: {}", show(out)))
        .to_string()
}

/// `key=value` from `account`'s report line.
fn count(out: &Output, account: &str, key: &str) -> u64 {
    let line = report_line(out, account);
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn a_pop3s_migration_keeps_every_uidl_and_clients_download_nothing_again() {
    const N: usize = 12;
    let dovecot = Dovecot::start();
    dovecot.add_user(JOHN, PASSWORD);
    dovecot.add_user_with_scheme(MARY, MARY_OLD, "SHA512-CRYPT");
    for i in 0..N {
        dovecot.deliver(JOHN, &message(&format!("john {i}")));
    }
    for i in 0..3 {
        dovecot.deliver(MARY, &message(&format!("mary {i}")));
    }
    // Both clients have everything, left on the server.
    let mpop_home = tempfile::tempdir().expect("home");
    assert_eq!(mpop(mpop_home.path(), dovecot.pop3, JOHN, PASSWORD), N);
    let fm_home = tempfile::tempdir().expect("home");
    assert_eq!(
        fetchmail(fm_home.path(), dovecot.pop3, JOHN, PASSWORD),
        (Some(0), N)
    );
    let at_dovecot = uidls(dovecot.pop3, JOHN, PASSWORD);
    let bodies = messages(dovecot.pop3, JOHN, PASSWORD);
    assert_eq!(at_dovecot.len(), N);

    let s = Server::start();
    s.add_user(JOHN);
    s.add_user(MARY);
    let from = format!("pop3s://127.0.0.1:{}", dovecot.pop3s.port());
    let ca = dovecot.ca_file();
    let ca = ca.to_str().expect("utf-8 path");
    let secret = tempfile::tempdir().expect("tmp");
    let password_file = secret.path().join("john.pw");
    fs::write(&password_file, format!("{PASSWORD}\n")).expect("write");
    let password_file = password_file.to_str().expect("utf-8 path");
    let john = [
        "--from",
        &from,
        "--ca-file",
        ca,
        "--user",
        JOHN,
        "--password-file",
        password_file,
    ];
    let out = migrate(&s, &john, "");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(count(&out, JOHN, "added"), N as u64);
    assert_eq!(count(&out, JOHN, "present"), 0);
    assert_eq!(count(&out, JOHN, "renumbered"), 0);
    let octets: usize = bodies.iter().map(Vec::len).sum();
    assert_eq!(count(&out, JOHN, "octets"), octets as u64);

    // Same ids in the same order, same bytes; and Dovecot still has everything.
    assert_eq!(uidls(s.pop3, JOHN, PASSWORD), at_dovecot);
    assert_eq!(messages(s.pop3, JOHN, PASSWORD), bodies);
    assert_eq!(uidls(dovecot.pop3, JOHN, PASSWORD), at_dovecot);

    // The same client state against pophost: nothing new.
    assert_eq!(
        mpop(mpop_home.path(), s.pop3, JOHN, PASSWORD),
        N,
        "mpop downloaded again"
    );
    assert_eq!(
        fetchmail(fm_home.path(), s.pop3, JOHN, PASSWORD),
        (Some(1), 0),
        "fetchmail downloaded again"
    );

    // Again: nothing read, nothing added.
    let out = migrate(&s, &john, "");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(count(&out, JOHN, "added"), 0);
    assert_eq!(count(&out, JOHN, "present"), N as u64);
    assert_eq!(count(&out, JOHN, "fetched"), 0);

    // Mail that reached the old server meanwhile: only it is read, and the clients get it.
    dovecot.deliver(JOHN, &message("late"));
    let out = migrate(&s, &john, "");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        (count(&out, JOHN, "added"), count(&out, JOHN, "fetched")),
        (1, 1)
    );
    assert_eq!(
        uidls(s.pop3, JOHN, PASSWORD),
        uidls(dovecot.pop3, JOHN, PASSWORD)
    );
    assert_eq!(mpop(mpop_home.path(), s.pop3, JOHN, PASSWORD), N + 1);
    assert_eq!(
        fetchmail(fm_home.path(), s.pop3, JOHN, PASSWORD),
        (Some(0), 1)
    );

    // Another login on the old server (Dovecot's SDPS form), the password on stdin.
    let out = migrate(
        &s,
        &[
            "--from",
            &from,
            "--ca-file",
            ca,
            "--user",
            MARY,
            "--login",
            "mary%example.com",
            "--password-stdin",
        ],
        &format!("{MARY_OLD}\n"),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(count(&out, MARY, "added"), 3);
    assert_eq!(
        uidls(s.pop3, MARY, PASSWORD),
        uidls(dovecot.pop3, MARY, MARY_OLD)
    );
}

#[test]
fn the_batch_form_reports_each_account_and_fails_when_one_fails() {
    let dovecot = Dovecot::start();
    dovecot.add_user(JOHN, PASSWORD);
    dovecot.add_user_with_scheme(MARY, MARY_OLD, "SHA512-CRYPT");
    for i in 0..4 {
        dovecot.deliver(JOHN, &message(&format!("john {i}")));
    }
    for i in 0..2 {
        dovecot.deliver(MARY, &message(&format!("mary {i}")));
    }
    let s = Server::start();
    s.add_user(JOHN);
    s.add_user(MARY);
    let dir = tempfile::tempdir().expect("tmp");
    let csv = dir.path().join("accounts.csv");
    fs::write(
        &csv,
        format!(
            "address,login,password\n\
             {JOHN},,{PASSWORD}\n\
             {MARY},{MARY},wrong password\n\
             this line is not an account\n"
        ),
    )
    .expect("write csv");
    let from = format!("pop3://127.0.0.1:{}", dovecot.pop3.port());
    let ca = dovecot.ca_file();
    let batch = [
        "--from",
        &from,
        "--starttls",
        "--ca-file",
        ca.to_str().expect("utf-8"),
        "--accounts",
        csv.to_str().expect("utf-8"),
        "--concurrency",
        "2",
    ];
    let out = migrate(&s, &batch, "");
    assert!(!out.status.success(), "one account failed: {}", show(&out));
    assert!(report_line(&out, JOHN).starts_with("ok "), "{}", show(&out));
    assert_eq!(count(&out, JOHN, "added"), 4);
    let mary = report_line(&out, MARY);
    assert!(
        mary.starts_with("FAILED") && mary.contains("refused the login"),
        "{mary}"
    );
    assert!(
        !mary.contains("wrong password"),
        "the password is not shown: {mary}"
    );
    let bad = report_line(&out, "line");
    assert!(bad.contains("line 4") && bad.contains("field(s)"), "{bad}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 of 3 account(s) migrated") && stdout.contains("2 failed"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 of 3 account(s) failed"),
        "{}",
        show(&out)
    );
    assert_eq!(login(s.pop3, JOHN, PASSWORD).stat().0, 4);
    assert_eq!(login(s.pop3, MARY, PASSWORD).stat().0, 0);

    // Fixed: Mary is copied, John's mail is not read again.
    fs::write(
        &csv,
        format!("address,login,password\n{JOHN},,{PASSWORD}\n{MARY},,{MARY_OLD}\n"),
    )
    .expect("write csv");
    let out = migrate(&s, &batch, "");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        (count(&out, JOHN, "added"), count(&out, JOHN, "fetched")),
        (0, 0)
    );
    assert_eq!(count(&out, JOHN, "present"), 4);
    assert_eq!(count(&out, MARY, "added"), 2);
    assert_eq!(
        uidls(s.pop3, MARY, PASSWORD),
        uidls(dovecot.pop3, MARY, MARY_OLD)
    );
}

#[test]
fn plain_pop3_and_an_untrusted_certificate_are_refused() {
    let dovecot = Dovecot::start();
    dovecot.add_user(JOHN, PASSWORD);
    dovecot.deliver(JOHN, &message("one"));
    let s = Server::start();
    s.add_user(JOHN);
    let plain = format!("pop3://127.0.0.1:{}", dovecot.pop3.port());
    let out = migrate(
        &s,
        &["--from", &plain, "--user", JOHN, "--password-stdin"],
        PASSWORD,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in the clear") && err.contains("--starttls"),
        "{}",
        show(&out)
    );

    // Dovecot's certificate is not signed by pophost's own (self-signed) one.
    let wrong = s.data().dir.join("tls/cert.pem");
    assert!(wrong.exists(), "serve made its self-signed certificate");
    let pop3s = format!("pop3s://127.0.0.1:{}", dovecot.pop3s.port());
    for (from, extra) in [(&pop3s, None), (&plain, Some("--starttls"))] {
        let mut args = vec![
            "--from",
            from.as_str(),
            "--ca-file",
            wrong.to_str().expect("utf-8"),
            "--user",
            JOHN,
            "--password-stdin",
        ];
        args.extend(extra);
        let out = migrate(&s, &args, PASSWORD);
        assert!(!out.status.success(), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("TLS with 127.0.0.1 failed: invalid peer certificate"),
            "{}",
            show(&out)
        );
    }
    assert_eq!(login(s.pop3, JOHN, PASSWORD).stat().0, 0);

    // --insecure: plain POP3 is allowed (loopback), and works.
    let out = migrate(
        &s,
        &[
            "--from",
            &plain,
            "--insecure",
            "--user",
            JOHN,
            "--password-stdin",
        ],
        PASSWORD,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(count(&out, JOHN, "added"), 1);

    // `pophost migrate` alone still applies the schema migrations.
    let out = s.cli(&["migrate"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("database schema is up to date"),
        "{}",
        show(&out)
    );
}

//! `pophost import` (issue 6): a customer moved in from a real Dovecot (Debian's, started from
//! bench/dovecot on loopback) keeps every POP3 UIDL, so `mpop` in leave-on-server
//! mode, having fetched everything from Dovecot, downloads nothing again from pophost; and the
//! mbox importer keeps `X-UIDL:` ids and reports the ones RFC 1939 does not allow.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;

use crate::dovecot::Dovecot;
use crate::harness::{PASSWORD, Pop3, Server, message, show};

const USER: &str = "john@example.com";

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `(number, uidl)` pairs of a raw UIDL listing.
fn uidl_listing(addr: SocketAddr) -> Vec<String> {
    let mut c = Pop3::login(addr, USER);
    assert!(c.cmd("UIDL").starts_with("+OK"));
    let lines = c.multi();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    lines
}

/// mpop as `USER`, leaving mail on the server (see `dovecot::mpop`).
fn mpop(home: &Path, server: SocketAddr) -> usize {
    crate::dovecot::mpop(home, server, USER, PASSWORD)
}

#[test]
fn a_dovecot_maildir_moves_in_and_mpop_downloads_nothing_again() {
    const MESSAGES: usize = 25;
    let dovecot = Dovecot::start();
    dovecot.add_user(USER, PASSWORD);
    for i in 0..MESSAGES {
        dovecot.deliver(USER, &message(&format!("dovecot {i}")));
    }
    // The client has everything, left on the server; Dovecot has assigned its UIDLs.
    let home = tempfile::tempdir().expect("home");
    assert_eq!(mpop(home.path(), dovecot.pop3), MESSAGES);
    let at_dovecot = uidl_listing(dovecot.pop3);
    assert_eq!(at_dovecot.len(), MESSAGES);

    let s = Server::start();
    s.add_user(USER);
    let maildir = dovecot.maildir(USER);
    let maildir = maildir.to_str().expect("utf-8 path");
    let out = ok(s.cli(&["import", "maildir", maildir, "--user", USER]));
    assert!(
        out.contains(&format!(
            "imported {MESSAGES} message(s) into {USER} ({MESSAGES} with their old UIDL), 0 already there, 0 renumbered"
        )),
        "{out}"
    );
    // Same ids, in the same order, as Dovecot showed.
    assert_eq!(uidl_listing(s.pop3), at_dovecot);
    // The same client state against pophost: nothing new.
    assert_eq!(mpop(home.path(), s.pop3), MESSAGES, "mpop downloaded again");
    // Idempotent: importing again adds nothing.
    let again = ok(s.cli(&["import", "maildir", maildir, "--user", USER]));
    assert!(
        again.contains(&format!(
            "imported 0 message(s) into {USER} (0 with their old UIDL), {MESSAGES} already there"
        )),
        "{again}"
    );
    // New mail gets a new id that collides with none of the imported ones, and is fetched.
    crate::harness::deliver(&s, USER, &message("after the move"));
    let listing = uidl_listing(s.pop3);
    assert_eq!(listing.len(), MESSAGES + 1);
    let ids: std::collections::HashSet<&str> = listing
        .iter()
        .filter_map(|l| l.split_once(' ').map(|(_, id)| id))
        .collect();
    assert_eq!(ids.len(), MESSAGES + 1);
    assert_eq!(
        mpop(home.path(), s.pop3),
        MESSAGES + 1,
        "exactly the new message"
    );
}

#[test]
fn an_mbox_keeps_x_uidl_and_reports_ids_rfc_1939_forbids() {
    let s = Server::start();
    s.add_user(USER);
    let dir = tempfile::tempdir().expect("tmp");
    let mbox = dir.path().join("inbox.mbox");
    let long = "y".repeat(71);
    fs::write(
        &mbox,
        format!(
            "From a@example.net Mon Jan  1 00:00:00 2024\nX-UIDL: old-0001\nSubject: one\n\nbody\n>From the start\n\n\
             From a@example.net Mon Jan  1 00:00:01 2024\nSubject: two\n\nno uidl\n\n\
             From a@example.net Mon Jan  1 00:00:02 2024\nX-UIDL: {long}\nSubject: three\n\ntoo long\n\n\
             From a@example.net Mon Jan  1 00:00:03 2024\nX-UIDL: old-0001\nSubject: four\n\nduplicate\n"
        ),
    )
    .expect("write mbox");
    let file = mbox.to_str().expect("utf-8");
    let out = ok(s.cli(&["import", "mbox", file, "--user", USER]));
    assert!(out.contains("imported 4 message(s)"), "{out}");
    assert!(out.contains("2 renumbered"), "{out}");
    assert!(out.contains("is 71 characters long"), "{out}");
    assert!(out.contains("\"old-0001\" is already used"), "{out}");
    let listing = uidl_listing(s.pop3);
    assert_eq!(listing[0], "1 old-0001");
    let mut c = Pop3::login(s.pop3, USER);
    let (_, body) = c.fetch("RETR 1");
    let body = String::from_utf8_lossy(&body).to_string();
    assert!(
        body.contains("\r\nFrom the start\r\n"),
        "unquoted, CRLF: {body:?}"
    );
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let again = ok(s.cli(&["import", "mbox", file, "--user", USER]));
    assert!(
        again.contains("imported 0 message(s)") && again.contains("4 already there"),
        "{again}"
    );
    // Bad input: a clear error, nothing stored.
    let out = s.cli(&["import", "maildir", file, "--user", USER]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a Maildir"),
        "{}",
        show(&out)
    );
    let out = s.cli(&["import", "mbox", file, "--user", "nobody@example.com"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such user"),
        "{}",
        show(&out)
    );
}

//! Migration at first login (issue "Migration", item 4): a domain in migration mode names its
//! old POP3 server (a real Dovecot here); a customer who logs in to pophost with the password
//! the old server knows gets an account with that password and their mail with its UIDLs, so
//! their leave-on-server client downloads nothing again; the old server keeps its copy.

use std::net::SocketAddr;

use crate::dovecot::{Dovecot, fetchmail, mpop};
use crate::harness::{Data, Pop3, Server, message};

/// The reply to PASS after USER.
fn login(addr: SocketAddr, user: &str, password: &str) -> (Pop3, String) {
    let mut c = Pop3::connect(addr);
    assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
    let reply = c.cmd(&format!("PASS {password}"));
    (c, reply)
}

fn uidls(c: &mut Pop3) -> Vec<String> {
    assert!(c.cmd("UIDL").starts_with("+OK"));
    c.multi()
}

#[test]
fn customers_move_at_their_first_login_and_clients_download_nothing_again() {
    const ALICE: &str = "alice@example.com";
    const BOB: &str = "bob@example.com";
    let dovecot = Dovecot::start();
    dovecot.add_user_with_scheme(ALICE, "alice old pw", "SHA512-CRYPT");
    dovecot.add_user_with_scheme(BOB, "bob old pw", "BLF-CRYPT");
    for i in 0..5 {
        dovecot.deliver(ALICE, &message(&format!("alice {i}")));
    }
    dovecot.deliver(BOB, &message("bob 0"));
    let home = tempfile::tempdir().expect("home");
    assert_eq!(mpop(home.path(), dovecot.pop3, ALICE, "alice old pw"), 5);
    let fm_home = tempfile::tempdir().expect("home");
    assert_eq!(
        fetchmail(fm_home.path(), dovecot.pop3, BOB, "bob old pw"),
        (Some(0), 1)
    );
    let (mut c, reply) = login(dovecot.pop3, ALICE, "alice old pw");
    assert!(reply.starts_with("+OK"), "{reply}");
    let at_dovecot = uidls(&mut c);
    c.cmd("QUIT");

    let config = format!(
        "[migration]\nca_file = \"{}\"\nlogin_wait_secs = 30\n",
        dovecot.ca_file().display()
    );
    let s = Server::spawn(Data::new().with_config(&config), &[]);
    let ok = |args: &[&str]| {
        let out = s.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            crate::harness::show(&out)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(&["domain", "add", "example.com"]);
    let url = format!("pop3s://localhost:{}", dovecot.pop3s.port());
    ok(&["domain", "set", "example.com", "--migrate-from", &url]);
    // Bob was created here already, with another password.
    ok(&["user", "add", BOB, "--password", "a new password here"]);
    let bad = s.cli(&["domain", "set", "example.com", "--migrate-from", "imap://x"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("migrate_from"),
        "{}",
        crate::harness::show(&bad)
    );

    let (_, reply) = login(s.pop3, ALICE, "alice wrong pw");
    assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
    assert!(
        !s.cli(&["user", "show", ALICE]).status.success(),
        "no account from a wrong password"
    );

    // Alice's first login moves her, UIDLs and all; mpop, with the state it has from Dovecot,
    // downloads nothing again.
    let (mut c, reply) = login(s.pop3, ALICE, "alice old pw");
    assert!(
        reply.starts_with("+OK"),
        "{reply}\n{}",
        s.log.lock().expect("log")
    );
    assert_eq!(uidls(&mut c), at_dovecot);
    c.cmd("QUIT");
    assert_eq!(mpop(home.path(), s.pop3, ALICE, "alice old pw"), 5);
    let shown = ok(&["user", "show", ALICE, "--json"]);
    let json: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(json["password_scheme"], "ARGON2ID", "{shown}");

    // Bob's password here is not the old server's: it logs him in (an account made during the
    // migration works), but moves nothing. His old password moves him.
    let (mut c, reply) = login(s.pop3, BOB, "a new password here");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(c.stat().0, 0);
    c.cmd("QUIT");
    // fetchmail, with the state it has from Dovecot: Bob's first login with his old password
    // moves him, and nothing is downloaded again.
    assert_eq!(
        fetchmail(fm_home.path(), s.pop3, BOB, "bob old pw"),
        (Some(1), 0),
        "fetchmail downloaded again"
    );
    let (mut c, reply) = login(s.pop3, BOB, "bob old pw");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(c.stat().0, 1);
    c.cmd("QUIT");

    let domains = ok(&["domain", "list"]);
    assert!(
        domains.contains("migrating: 2 of 2 users moved"),
        "{domains}"
    );

    // The old server was only read.
    let (mut c, reply) = login(dovecot.pop3, ALICE, "alice old pw");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(uidls(&mut c), at_dovecot);
    c.cmd("QUIT");

    // Once moved, a customer no longer needs the old server.
    drop(dovecot);
    let (mut c, reply) = login(s.pop3, ALICE, "alice old pw");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(c.stat().0, 5);
    c.cmd("QUIT");
}

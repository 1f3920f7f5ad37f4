//! An ISP moves off Dovecot (issue "Migration", item 5): a real Dovecot whose users hold
//! passwords in eight of its schemes and mail in their Maildirs, read by leave-on-server clients
//! (mpop, fetchmail --keep). pophost imports Dovecot's own passwd-file, then gets the mail
//! either with `pophost migrate pop3 --accounts` or by migration at first login. Afterwards every
//! user logs in with the old password (USER/PASS, AUTH PLAIN, SCRAM-SHA-256), the clients
//! download nothing again, and every hash is pophost's argon2id.

use std::fs;

use crate::dovecot::{Dovecot, fetchmail, mpop};
use crate::harness::{Data, Pop3, Server, message, show};

const DOMAIN: &str = "example.com";

/// The schemes an ISP's Dovecot is likely to hold, one user each.
const SCHEMES: [&str; 8] = [
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "MD5-CRYPT",
    "BLF-CRYPT",
    "SSHA512",
    "PBKDF2",
    "SCRAM-SHA-256",
    "ARGON2ID",
];

struct User {
    address: String,
    password: String,
    scheme: &'static str,
    home: tempfile::TempDir,
}

/// User `i` reads with mpop when even, with fetchmail when odd.
fn uses_mpop(i: usize) -> bool {
    i.is_multiple_of(2)
}

/// Dovecot with one user per scheme, three messages each, read (and left there) by each user's
/// client.
fn old_server() -> (Dovecot, Vec<User>) {
    let dovecot = Dovecot::start();
    let users: Vec<User> = SCHEMES
        .iter()
        .enumerate()
        .map(|(i, scheme)| User {
            address: format!("user{i}@{DOMAIN}"),
            password: format!("old {scheme} password"),
            scheme,
            home: tempfile::tempdir().expect("home"),
        })
        .collect();
    for (i, u) in users.iter().enumerate() {
        dovecot.add_user_with_scheme(&u.address, &u.password, u.scheme);
        for n in 0..3 {
            dovecot.deliver(&u.address, &message(&format!("{} {n}", u.address)));
        }
        if uses_mpop(i) {
            assert_eq!(
                mpop(u.home.path(), dovecot.pop3, &u.address, &u.password),
                3
            );
        } else {
            let got = fetchmail(u.home.path(), dovecot.pop3, &u.address, &u.password);
            assert_eq!(got, (Some(0), 3), "{}", u.address);
        }
    }
    (dovecot, users)
}

/// Imports Dovecot's passwd-file; every hash is kept as Dovecot stored it.
fn import_accounts(s: &Server, dovecot: &Dovecot, users: &[User]) {
    let dir = tempfile::tempdir().expect("tmp");
    let passwd = dir.path().join("passwd");
    fs::write(&passwd, dovecot.passwd_file(DOMAIN)).expect("write passwd");
    let out = s.cli(&[
        "import",
        "accounts",
        "passwd-file",
        passwd.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let summary = format!("{} added, 0 updated, 0 unchanged, 0 failed", users.len());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&summary),
        "{}",
        show(&out)
    );
    for u in users {
        assert_eq!(s.password_scheme(&u.address), u.scheme, "{}", u.address);
    }
}

/// Every user logs in with the old password: SCRAM first for the one whose verifier Dovecot
/// held, then USER/PASS or AUTH PLAIN, after which each hash is argon2id and SCRAM works for
/// everyone; the clients, with the state they have from Dovecot, download nothing again.
fn everyone_is_moved(s: &Server, users: &[User]) {
    let scram_user = users
        .iter()
        .find(|u| u.scheme == "SCRAM-SHA-256")
        .expect("scram");
    let scram = crate::sasl::scram(s, &scram_user.address, &scram_user.password);
    assert!(scram.contains("server-final ok"), "{scram}");
    for (i, u) in users.iter().enumerate() {
        let reply = if i.is_multiple_of(3) {
            s.auth_plain(&u.address, &u.password)
        } else {
            let mut c = Pop3::connect(s.pop3);
            assert!(c.cmd(&format!("USER {}", u.address)).starts_with("+OK"));
            let reply = c.cmd(&format!("PASS {}", u.password));
            c.send("QUIT");
            reply
        };
        assert!(
            reply.starts_with("+OK"),
            "{} ({}): {reply}",
            u.address,
            u.scheme
        );
        assert_eq!(s.password_scheme(&u.address), "ARGON2ID", "{}", u.address);
        let scram = crate::sasl::scram(s, &u.address, &u.password);
        assert!(scram.contains("server-final ok"), "{}: {scram}", u.address);
        if uses_mpop(i) {
            // mpop counts the Maildir it delivers into: still the 3 from Dovecot.
            assert_eq!(mpop(u.home.path(), s.pop3, &u.address, &u.password), 3);
        } else {
            let got = fetchmail(u.home.path(), s.pop3, &u.address, &u.password);
            assert_eq!(
                got,
                (Some(1), 0),
                "fetchmail downloaded again: {}",
                u.address
            );
        }
        let mut c = Pop3::connect(s.pop3);
        assert!(c.cmd(&format!("USER {}", u.address)).starts_with("+OK"));
        assert!(c.cmd(&format!("PASS {}", u.password)).starts_with("+OK"));
        assert_eq!(c.stat().0, 3, "{}", u.address);
        c.cmd("QUIT");
    }
}

#[test]
fn accounts_from_the_passwd_file_and_mail_over_pop3() {
    let (dovecot, users) = old_server();
    let s = Server::start();
    assert!(s.cli(&["domain", "add", DOMAIN]).status.success());
    import_accounts(&s, &dovecot, &users);

    let dir = tempfile::tempdir().expect("tmp");
    let csv = dir.path().join("accounts.csv");
    let mut text = "address,login,password\n".to_string();
    for u in &users {
        text += &format!("{},,{}\n", u.address, u.password);
    }
    fs::write(&csv, text).expect("write csv");
    let from = format!("pop3s://localhost:{}", dovecot.pop3s.port());
    let ca = dovecot.ca_file();
    let out = s.cli(&[
        "migrate",
        "pop3",
        "--from",
        &from,
        "--ca-file",
        ca.to_str().expect("utf-8"),
        "--accounts",
        csv.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    // Copying mail logs nobody in: the imported hashes are still there.
    assert_eq!(s.password_scheme(&users[0].address), SCHEMES[0]);

    everyone_is_moved(&s, &users);
}

#[test]
fn accounts_from_the_passwd_file_and_mail_at_first_login() {
    let (dovecot, users) = old_server();
    let config = format!(
        "[migration]\nca_file = \"{}\"\nlogin_wait_secs = 30\n",
        dovecot.ca_file().display()
    );
    let s = Server::spawn(Data::new().with_config(&config), &[]);
    assert!(s.cli(&["domain", "add", DOMAIN]).status.success());
    import_accounts(&s, &dovecot, &users);
    let from = format!("pop3s://localhost:{}", dovecot.pop3s.port());
    let out = s.cli(&["domain", "set", DOMAIN, "--migrate-from", &from]);
    assert!(out.status.success(), "{}", show(&out));

    everyone_is_moved(&s, &users);
    let domains = s.cli(&["domain", "list"]);
    let n = users.len();
    assert!(
        show(&domains).contains(&format!("migrating: {n} of {n} users moved")),
        "{}",
        show(&domains)
    );
}

//! Imported password hashes (issue "Migration", item 1): a user given the hash their old server
//! stored logs in with their old password by every mechanism the hash allows — SCRAM at once
//! when Dovecot kept a SCRAM verifier — and the first login replaces the hash with argon2id;
//! `/metrics` and the dashboard count the accounts still holding each legacy scheme; a
//! malformed or unknown hash is refused with an error naming the scheme, storing nothing.

use crate::harness::{Pop3, Server, show};
use crate::ops::{get, scrape};
use crate::sasl::scram;

// doveadm pw -s SCRAM-SHA-256 -p "scram old pw"
const SCRAM: &str = "{SCRAM-SHA-256}4096,okuMlJ2cTCs2sbwcNZN2Pw==,O2Uqnr8KwlojIuxV/FTd1ew3p2pnERr3ubnpLboXsGI=,9qpTkbPfoJKhKoiPu1V06iYKEmG72LaT56TImyqN4Fs=";
// doveadm pw -s PBKDF2 -p "pbkdf2 old pw"
const PBKDF2: &str = "{PBKDF2}$1$m1hK6amUgNBADsdX$5000$4e1cd776f14d2985147110b57edb28dbc5b8b331";
// doveadm pw -s SSHA512 -p "ssha old pw"
const SSHA512: &str = "{SSHA512}Z8urQPcmsPbvxZNDiG0Tuidf/iK5oVahhBiiLdx5w3KERrUf6fzD/XwnAy0cea8s2Q5gGTByDRhmTaVVh8cUAB8Qd5U=";

#[test]
fn imported_hashes_log_in_are_counted_and_replaced_at_the_first_login() {
    let s = Server::start();
    let ok = |args: &[&str]| {
        let out = s.cli(args);
        assert!(out.status.success(), "{args:?}: {}", show(&out));
    };
    ok(&["domain", "add", "example.com"]);
    ok(&["user", "add", "scram@example.com", "--password-hash", SCRAM]);
    ok(&[
        "user",
        "add",
        "pbkdf2@example.com",
        "--password-hash",
        PBKDF2,
    ]);
    // A bare crypt string is taken too; `passwd` sets an imported hash like `add`.
    ok(&[
        "user",
        "add",
        "ssha@example.com",
        "--password",
        "a long temporary password",
    ]);
    ok(&[
        "user",
        "passwd",
        "ssha@example.com",
        "--password-hash",
        SSHA512,
    ]);
    assert_eq!(s.password_scheme("ssha@example.com"), "SSHA512");

    for (hash, named) in [
        ("{FOO}abc", "FOO"),
        ("{SSHA512}!!!not base64", "SSHA512"),
        ("{DES-CRYPT}abDEFghIJklMn", "DES"),
    ] {
        let out = s.cli(&["user", "add", "bad@example.com", "--password-hash", hash]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{hash}: {err}");
        assert!(!err.contains(hash), "the hash is not echoed: {err}");
    }
    assert!(
        !s.cli(&["user", "show", "bad@example.com"]).status.success(),
        "nothing stored"
    );

    let m = scrape(&s);
    for (scheme, n) in [("SCRAM-SHA-256", 1.0), ("PBKDF2", 1.0), ("SSHA512", 1.0)] {
        let series = format!("pophost_accounts_legacy_password{{scheme=\"{scheme}\"}}");
        assert_eq!(get(&m, &series), n, "{series}");
    }

    // SCRAM works at once from Dovecot's verifier, and leaves the hash (SCRAM never sees the
    // password).
    assert!(scram(&s, "scram@example.com", "scram old pw").contains("server-final ok"));
    assert!(!scram(&s, "scram@example.com", "scram old p").contains("server-final ok"));
    assert_eq!(s.password_scheme("scram@example.com"), "SCRAM-SHA-256");
    // A wrong password changes nothing; the right one, by any mechanism, upgrades.
    assert!(
        s.auth_plain("pbkdf2@example.com", "pbkdf2 old")
            .starts_with("-ERR")
    );
    assert_eq!(s.password_scheme("pbkdf2@example.com"), "PBKDF2");
    assert!(
        s.auth_plain("pbkdf2@example.com", "pbkdf2 old pw")
            .starts_with("+OK")
    );
    assert_eq!(s.password_scheme("pbkdf2@example.com"), "ARGON2ID");
    let mut c = Pop3::connect(s.pop3);
    c.cmd("USER ssha@example.com");
    assert!(c.cmd("PASS ssha old pw").starts_with("+OK"));
    c.cmd("QUIT");
    assert!(
        s.auth_plain("scram@example.com", "scram old pw")
            .starts_with("+OK")
    );
    for user in ["ssha", "scram", "pbkdf2"] {
        let address = format!("{user}@example.com");
        assert_eq!(s.password_scheme(&address), "ARGON2ID", "{address}");
    }
    // The old password goes on working, SCRAM included (a verifier was derived with it).
    assert!(
        s.auth_plain("ssha@example.com", "ssha old pw")
            .starts_with("+OK")
    );
    assert!(scram(&s, "pbkdf2@example.com", "pbkdf2 old pw").contains("server-final ok"));
    let m = scrape(&s);
    for scheme in ["SCRAM-SHA-256", "PBKDF2", "SSHA512"] {
        let series = format!("pophost_accounts_legacy_password{{scheme=\"{scheme}\"}}");
        assert_eq!(get(&m, &series), 0.0, "{series}");
    }
    assert_eq!(
        get(&m, "pophost_legacy_hash_upgrades_total{scheme=\"PBKDF2\"}"),
        1.0
    );
}

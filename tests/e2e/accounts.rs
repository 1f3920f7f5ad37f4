//! `pophost import accounts` (Migration, item 2): an ISP's accounts move in from Dovecot with the
//! password hashes Dovecot's own `doveadm pw` made, in a passwd-file and as CSV. Every user then
//! logs in to pophost with their old password (SCRAM-SHA-256 with the imported verifier, before
//! anything replaces it), after which the hash is pophost's argon2id. Bad lines are reported by
//! number and make the exit status non-zero; a dry run and a re-run change nothing; `--update`
//! does.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::{Pop3, Server, show};

/// `doveadm pw -s SCHEME -p PASSWORD`: the hash as Dovecot itself stores it.
pub(crate) fn doveadm_pw(scheme: &str, password: &str) -> String {
    assert!(
        Path::new("/usr/bin/doveadm").exists(),
        "Dovecot is needed: apt-get install dovecot-core (scripts/test does)"
    );
    let out = Command::new("doveadm")
        .args(["pw", "-s", scheme, "-p", password])
        .stdin(Stdio::null())
        .output()
        .expect("run doveadm");
    assert!(
        out.status.success(),
        "doveadm pw -s {scheme}: {}",
        show(&out)
    );
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(hash.starts_with(&format!("{{{scheme}}}")), "{hash}");
    hash
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `pophost user show --json`, parsed; `None` when there is no such user.
fn user_show(server: &Server, address: &str) -> Option<serde_json::Value> {
    let out = server.cli(&["user", "show", address, "--json"]);
    if !out.status.success() {
        assert!(stderr(&out).contains("not found"), "{}", show(&out));
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("user show --json"))
}

/// USER/PASS; the reply to PASS.
fn user_pass(server: &Server, address: &str, password: &str) -> String {
    let mut c = Pop3::connect(server.pop3);
    assert!(c.cmd(&format!("USER {address}")).starts_with("+OK"));
    let r = c.cmd(&format!("PASS {password}"));
    c.send("QUIT");
    r
}

struct Account {
    local: &'static str,
    scheme: &'static str,
    password: String,
}

/// One account per scheme Dovecot offers that an ISP is likely to have, each with its own
/// password (the `{PLAIN}` one with spaces, which the passwd-file keeps).
fn accounts() -> Vec<Account> {
    [
        ("sha512crypt", "SHA512-CRYPT"),
        ("sha256crypt", "SHA256-CRYPT"),
        ("md5crypt", "MD5-CRYPT"),
        ("blfcrypt", "BLF-CRYPT"),
        ("ssha512", "SSHA512"),
        ("ssha", "SSHA"),
        ("sha512", "SHA512"),
        ("pbkdf2", "PBKDF2"),
        ("scram", "SCRAM-SHA-256"),
        ("argon2id", "ARGON2ID"),
        ("argon2i", "ARGON2I"),
        ("plainmd5", "PLAIN-MD5"),
        ("plain", "PLAIN"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (local, scheme))| Account {
        local,
        scheme,
        password: if scheme == "PLAIN" {
            "old pass with spaces".to_string()
        } else {
            format!("old password {i}")
        },
    })
    .collect()
}

fn address(local: &str) -> String {
    format!("{local}@example.com")
}

/// The scheme `user show` names right after the import: `{PLAIN}` is hashed on the way in.
fn imported_scheme(a: &Account) -> &'static str {
    if a.scheme == "PLAIN" {
        "ARGON2ID"
    } else {
        a.scheme
    }
}

fn server() -> Server {
    let server = Server::start();
    let out = server.cli(&["domain", "add", "example.com"]);
    assert!(out.status.success(), "{}", show(&out));
    server
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8 path").to_string()
}

/// Every account logs in with its old password, the SCRAM one by SCRAM-SHA-256 first; each
/// hash is then pophost's argon2id.
fn everyone_logs_in_with_the_old_password(server: &Server, accounts: &[Account]) {
    let scram = accounts
        .iter()
        .find(|a| a.scheme == "SCRAM-SHA-256")
        .expect("scram account");
    let transcript = crate::sasl::scram(server, &address(scram.local), &scram.password);
    assert!(transcript.contains("server-final ok"), "{transcript}");
    assert!(transcript.contains("\n+OK"), "{transcript}");
    // SCRAM needs no password in the clear, so the imported verifier is still what is stored.
    assert_eq!(
        server.password_scheme(&address(scram.local)),
        "SCRAM-SHA-256"
    );

    for (i, a) in accounts.iter().enumerate() {
        let addr = address(a.local);
        let wrong = user_pass(server, &addr, "not the password");
        assert!(wrong.starts_with("-ERR"), "{addr}: {wrong}");
        assert_eq!(server.password_scheme(&addr), imported_scheme(a), "{addr}");
        let r = if i % 2 == 0 {
            user_pass(server, &addr, &a.password)
        } else {
            server.auth_plain(&addr, &a.password)
        };
        assert!(r.starts_with("+OK"), "{addr} ({}): {r}", a.scheme);
        assert_eq!(
            server.password_scheme(&addr),
            "ARGON2ID",
            "{addr} after login"
        );
        // The argon2id hash holds the same password.
        let again = user_pass(server, &addr, &a.password);
        assert!(again.starts_with("+OK"), "{addr}: {again}");
    }
    // The new verifier, derived at that login, holds the old password too.
    let transcript = crate::sasl::scram(server, &address(scram.local), &scram.password);
    assert!(transcript.contains("server-final ok"), "{transcript}");
}

#[test]
fn a_dovecot_passwd_file_moves_in() {
    let accounts = accounts();
    let server = server();
    let dir = tempfile::tempdir().expect("tempdir");

    // Dovecot's passwd-file layout: user:password:uid:gid:gecos:home:shell:extra. Bare user
    // names take --domain; one line names its domain itself.
    let mut lines = vec!["# exported from the old Dovecot".to_string()];
    for (i, a) in accounts.iter().enumerate() {
        let hash = doveadm_pw(a.scheme, &a.password);
        let user = if i == 1 {
            address(a.local)
        } else {
            a.local.to_string()
        };
        let extra = match a.local {
            "sha512crypt" => {
                "userdb_quota_rule=*:storage=1G userdb_quota_rule2=*:messages=500 userdb_mail=maildir:~/Maildir"
            }
            // As bench/dovecot/dovecot-provision.sh writes it.
            "md5crypt" => "userdb_quota_rule=*:bytes=5242880",
            _ => "",
        };
        lines.push(format!(
            "{user}:{hash}:5000:5000::/var/vmail/example.com/{}::{extra}",
            a.local
        ));
        if i == 4 {
            lines.push(String::new());
        }
    }
    // Two bad lines: a quota rule pophost cannot represent, and DES crypt (too weak).
    lines.push(format!(
        "trashquota:{}:5000:5000::/home::userdb_quota_rule=Trash:storage=+100M",
        doveadm_pw("SHA512-CRYPT", "x")
    ));
    let bad_quota = lines.len();
    lines.push("descrypt:{DES-CRYPT}abJnggxhB/yWI".to_string());
    let bad_hash = lines.len();
    let passwd = write(dir.path(), "passwd", &(lines.join("\n") + "\n"));
    let n = accounts.len();
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import",
            "accounts",
            "passwd-file",
            passwd.as_str(),
            "--domain",
            "example.com",
        ];
        args.extend_from_slice(extra);
        server.cli(&args)
    };

    // A dry run reports what would happen and changes nothing.
    let dry = import(&["--dry-run"]);
    assert!(!dry.status.success(), "{}", show(&dry));
    assert!(
        stdout(&dry).contains(&format!("{n} added, 0 updated, 0 unchanged, 2 failed")),
        "{}",
        show(&dry)
    );
    assert!(stdout(&dry).contains("dry run"), "{}", show(&dry));
    assert!(
        stderr(&dry).contains(&format!("line {bad_quota}: ")),
        "{}",
        show(&dry)
    );
    for a in &accounts {
        assert!(
            user_show(&server, &address(a.local)).is_none(),
            "{}",
            a.local
        );
    }

    let out = import(&[]);
    assert!(
        !out.status.success(),
        "a failed line must fail the command: {}",
        show(&out)
    );
    assert!(
        stdout(&out).contains(&format!("{n} added, 0 updated, 0 unchanged, 2 failed")),
        "{}",
        show(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "line {bad_quota}: quota rule \"Trash:storage=+100M\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("line {bad_hash}: descrypt@example.com: "))
            && err.contains("too weak"),
        "{err}"
    );
    assert!(!err.contains("abJnggxhB"), "a hash is printed: {err}");
    assert!(user_show(&server, "descrypt@example.com").is_none());
    assert!(user_show(&server, "trashquota@example.com").is_none());

    for a in &accounts {
        let addr = address(a.local);
        let user = user_show(&server, &addr).unwrap_or_else(|| panic!("{addr} not imported"));
        assert_eq!(user["password_scheme"], imported_scheme(a), "{addr}");
        assert_eq!(user["enabled"], true);
        let (bytes, messages) = match a.local {
            "sha512crypt" => (serde_json::json!(1u64 << 30), serde_json::json!(500)),
            "md5crypt" => (serde_json::json!(5_242_880), serde_json::Value::Null),
            _ => (serde_json::Value::Null, serde_json::Value::Null),
        };
        assert_eq!(
            (&user["quota_bytes"], &user["quota_messages"]),
            (&bytes, &messages),
            "{addr}"
        );
    }
    // Audited as the command line.
    assert_eq!(
        server
            .data()
            .sql("SELECT count(*) FROM audit_log WHERE actor = 'cli' AND action = 'user.create'"),
        n.to_string()
    );

    everyone_logs_in_with_the_old_password(&server, &accounts);

    // Again, without the bad lines: every account is there already and stays as it is (the
    // hashes are not put back over the argon2id ones).
    let good: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| ![bad_quota, bad_hash].contains(&(i + 1)))
        .map(|(_, l)| l.as_str())
        .collect();
    std::fs::write(&passwd, good.join("\n") + "\n").expect("write");
    let again = import(&[]);
    assert!(again.status.success(), "{}", show(&again));
    assert!(
        stdout(&again).contains(&format!("0 added, 0 updated, {n} unchanged, 0 failed")),
        "{}",
        show(&again)
    );
    assert_eq!(server.password_scheme(&address("sha512crypt")), "ARGON2ID");

    // --update with a line that has a new quota and no password: the quota changes, the
    // password stays.
    let update = write(
        dir.path(),
        "update",
        "sha512crypt::5000:5000::/home::userdb_quota_rule=*:storage=2G userdb_quota_rule2=*:messages=500\n",
    );
    let out = server.cli(&[
        "import",
        "accounts",
        "passwd-file",
        &update,
        "--domain",
        "example.com",
        "--update",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("0 added, 1 updated, 0 unchanged, 0 failed"),
        "{}",
        show(&out)
    );
    let user = user_show(&server, &address("sha512crypt")).expect("user");
    assert_eq!(user["quota_bytes"], 2u64 << 30);
    assert_eq!(user["quota_messages"], 500);
    assert_eq!(user["password_scheme"], "ARGON2ID");
    let r = user_pass(&server, &address("sha512crypt"), &accounts[0].password);
    assert!(r.starts_with("+OK"), "{r}");
    // Without --update the same line is left alone; with it again, nothing differs.
    for extra in [&[][..], &["--update"][..]] {
        let mut args = vec![
            "import",
            "accounts",
            "passwd-file",
            &update,
            "--domain",
            "example.com",
        ];
        args.extend_from_slice(extra);
        let out = server.cli(&args);
        assert!(
            stdout(&out).contains("0 added, 0 updated, 1 unchanged, 0 failed"),
            "{}",
            show(&out)
        );
    }
}

#[test]
fn a_csv_file_moves_in() {
    let server = server();
    let dir = tempfile::tempdir().expect("tempdir");
    let blf = doveadm_pw("BLF-CRYPT", "csv pass 1");
    let scram = doveadm_pw("SCRAM-SHA-256", "csv pass 2");
    // Columns in another order than the documented one; the hashes quoted (SCRAM's has commas).
    let csv = format!(
        "quota_messages,address,password_hash,password,enabled,quota_bytes\n\
         100,blf@example.com,\"{blf}\",,,10M\n\
         ,scram@example.com,\"{scram}\",,true,\n\
         ,typed@example.com,,typed password 3,false,unlimited\n\
         ,nopass@example.com,,,,\n\
         ,both@example.com,\"{blf}\",typed password 5,,\n\
         lots,badquota@example.com,\"{blf}\",,,\n\
         ,other@elsewhere.org,\"{blf}\",,,\n"
    );
    let file = write(dir.path(), "accounts.csv", &csv);
    let import = |extra: &[&str]| {
        let mut args = vec!["import", "accounts", "csv", file.as_str()];
        args.extend_from_slice(extra);
        server.cli(&args)
    };

    let dry = import(&["--dry-run"]);
    assert!(
        stdout(&dry).contains("3 added, 0 updated, 0 unchanged, 4 failed"),
        "{}",
        show(&dry)
    );
    assert!(user_show(&server, "blf@example.com").is_none());

    let out = import(&[]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("3 added, 0 updated, 0 unchanged, 4 failed"),
        "{}",
        show(&out)
    );
    let err = stderr(&out);
    for want in [
        "line 5: nopass@example.com: no password",
        "line 6: give password_hash or password, not both",
        "line 7: quota_messages: ",
        "line 8: other@elsewhere.org: domain elsewhere.org not found",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }

    let blf_user = user_show(&server, "blf@example.com").expect("blf");
    assert_eq!(blf_user["password_scheme"], "BLF-CRYPT");
    assert_eq!(blf_user["quota_bytes"], 10 << 20);
    assert_eq!(blf_user["quota_messages"], 100);
    assert_eq!(server.password_scheme("scram@example.com"), "SCRAM-SHA-256");
    let typed = user_show(&server, "typed@example.com").expect("typed");
    assert_eq!(typed["password_scheme"], "ARGON2ID");
    assert_eq!(typed["enabled"], false);

    let t = crate::sasl::scram(&server, "scram@example.com", "csv pass 2");
    assert!(t.contains("server-final ok"), "{t}");
    assert!(user_pass(&server, "blf@example.com", "csv pass 1").starts_with("+OK"));
    assert_eq!(server.password_scheme("blf@example.com"), "ARGON2ID");
    // Disabled by the file: the right password is still refused.
    assert!(user_pass(&server, "typed@example.com", "typed password 3").starts_with("-ERR"));

    // A re-run of the good rows: all unchanged. --update: the changed quota goes in.
    let good = write(
        dir.path(),
        "good.csv",
        &format!(
            "address,password_hash,quota_bytes\nblf@example.com,\"{blf}\",\n\
             scram@example.com,,\ntyped@example.com,,\n"
        ),
    );
    let out = server.cli(&["import", "accounts", "csv", &good]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("0 added, 0 updated, 3 unchanged, 0 failed"),
        "{}",
        show(&out)
    );
    let update = write(
        dir.path(),
        "update.csv",
        "address,quota_bytes,enabled\nblf@example.com,20M,\ntyped@example.com,,true\n",
    );
    let out = server.cli(&["import", "accounts", "csv", &update, "--update"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("0 added, 2 updated, 0 unchanged, 0 failed"),
        "{}",
        show(&out)
    );
    assert_eq!(
        user_show(&server, "blf@example.com").expect("blf")["quota_bytes"],
        20 << 20
    );
    assert!(user_pass(&server, "typed@example.com", "typed password 3").starts_with("+OK"));
    assert!(user_pass(&server, "blf@example.com", "csv pass 1").starts_with("+OK"));
}

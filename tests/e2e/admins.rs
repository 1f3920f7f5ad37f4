//! `pophost admin list|set|passwd|remove` with the real binary on a real store: what each
//! prints, what it changes, that a password change ends the admin's sessions and tokens, that the
//! last enabled super admin stays, and the audit records the CLI leaves (actor `cli`).

use std::io::Write;
use std::process::{Output, Stdio};

use crate::harness::*;

const PW: &str = "admin password 1";

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", show(out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `pophost ARGS` with `stdin` on its standard input.
fn cli_stdin(data: &Data, args: &[&str], stdin: &str) -> Output {
    let mut child = data
        .command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pophost");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("pophost output")
}

fn audit(data: &Data, action: &str, object: &str) -> String {
    data.sql(&format!(
        "SELECT actor || ' ' || CASE WHEN success THEN 'ok' ELSE 'failed' END FROM audit_log
         WHERE action = '{action}' AND object = '{object}' ORDER BY id DESC LIMIT 1"
    ))
}

#[test]
fn cli_lists_rescopes_disables_repasswords_and_removes_admins() {
    let data = Data::new();
    ok(&data.cli(&["domain", "add", "a.example"]));
    ok(&data.cli(&["domain", "add", "b.example"]));
    ok(&cli_stdin(
        &data,
        &[
            "admin",
            "add",
            "root@isp.example",
            "--super",
            "--password-stdin",
        ],
        &format!("{PW}\n"),
    ));
    ok(&cli_stdin(
        &data,
        &[
            "admin",
            "add",
            "anna@isp.example",
            "--domain",
            "a.example",
            "--password-stdin",
        ],
        &format!("{PW}\n"),
    ));

    let list = ok(&data.cli(&["admin", "list"]));
    assert_eq!(
        list,
        "2 admin(s)\n\
         anna@isp.example domains=a.example enabled last_signin=never tokens=0\n\
         root@isp.example super enabled last_signin=never tokens=0"
    );

    let set = ok(&data.cli(&[
        "admin",
        "set",
        "anna@isp.example",
        "--domains",
        "b.example,a.example",
    ]));
    assert_eq!(set, "anna@isp.example is now admin of a.example, b.example");
    assert_eq!(audit(&data, "admin.scope", "anna@isp.example"), "cli ok");
    let bad = data.cli(&[
        "admin",
        "set",
        "anna@isp.example",
        "--domains",
        "nowhere.example",
    ]);
    assert!(!bad.status.success());
    assert!(show(&bad).contains("nowhere.example"), "{}", show(&bad));
    let nothing = data.cli(&["admin", "set", "anna@isp.example"]);
    assert!(!nothing.status.success(), "a change is required");
    let both = data.cli(&[
        "admin",
        "set",
        "anna@isp.example",
        "--super",
        "--domains",
        "a.example",
    ]);
    assert!(!both.status.success(), "--super or --domains, not both");

    // A session and a token of anna's, then a new password from standard input.
    let anna_id = data.sql("SELECT id FROM admins WHERE email = 'anna@isp.example'");
    let old_hash = data.sql("SELECT password_hash FROM admins WHERE email = 'anna@isp.example'");
    data.sql(&format!(
        "INSERT INTO admin_sessions (id_hash, admin_id, csrf, created_at, last_seen)
         VALUES ('s', {anna_id}, 'c', 1, 1)"
    ));
    data.sql(&format!(
        "INSERT INTO api_tokens (admin_id, name, token_hash, created_at) VALUES ({anna_id}, 't', 'h', 1)"
    ));
    let short = cli_stdin(&data, &["admin", "passwd", "anna@isp.example"], "short\n");
    assert!(!short.status.success());
    assert!(
        show(&short).contains("at least 12 characters"),
        "{}",
        show(&short)
    );
    let argv = data.cli(&["admin", "passwd", "anna@isp.example", "--password", PW]);
    assert!(!argv.status.success(), "never a password in argv");
    let changed = ok(&cli_stdin(
        &data,
        &["admin", "passwd", "anna@isp.example"],
        "another password 2\n",
    ));
    assert_eq!(
        changed,
        "password of anna@isp.example changed; sessions ended, API tokens revoked"
    );
    assert_ne!(
        data.sql("SELECT password_hash FROM admins WHERE email = 'anna@isp.example'"),
        old_hash
    );
    assert_eq!(
        data.sql(&format!(
            "SELECT count(*) FROM admin_sessions WHERE admin_id = {anna_id}"
        )),
        "0"
    );
    assert_eq!(
        data.sql(&format!(
            "SELECT count(*) FROM api_tokens WHERE admin_id = {anna_id}"
        )),
        "0"
    );
    assert_eq!(audit(&data, "admin.password", "anna@isp.example"), "cli ok");

    assert_eq!(
        ok(&data.cli(&["admin", "set", "anna@isp.example", "--disable"])),
        "anna@isp.example disabled; sessions ended, API tokens revoked"
    );
    assert!(
        ok(&data.cli(&["admin", "list"]))
            .contains("anna@isp.example domains=a.example,b.example disabled")
    );
    assert_eq!(audit(&data, "admin.disable", "anna@isp.example"), "cli ok");
    assert_eq!(
        ok(&data.cli(&["admin", "set", "anna@isp.example", "--super", "--enable"])),
        "anna@isp.example is now super admin\nanna@isp.example enabled"
    );
    assert_eq!(audit(&data, "admin.enable", "anna@isp.example"), "cli ok");

    // Two super admins: one may go, the last may not.
    assert_eq!(
        ok(&data.cli(&["admin", "remove", "anna@isp.example"])),
        "removed admin anna@isp.example"
    );
    assert_eq!(audit(&data, "admin.remove", "anna@isp.example"), "cli ok");
    let last = data.cli(&["admin", "remove", "root@isp.example"]);
    assert!(!last.status.success());
    assert!(
        show(&last).contains(
            "root@isp.example is the last enabled super admin: make another admin super admin first"
        ),
        "{}",
        show(&last)
    );
    let last = data.cli(&["admin", "set", "root@isp.example", "--disable"]);
    assert!(!last.status.success());
    assert!(show(&last).contains("last enabled super admin"));
    let gone = data.cli(&["admin", "remove", "anna@isp.example"]);
    assert!(!gone.status.success());
    assert!(
        show(&gone).contains("admin anna@isp.example not found"),
        "{}",
        show(&gone)
    );
    assert_eq!(
        ok(&data.cli(&["admin", "list"])),
        "1 admin(s)\nroot@isp.example super enabled last_signin=never tokens=0"
    );
}

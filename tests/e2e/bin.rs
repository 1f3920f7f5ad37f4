//! The recycle bin end to end (issue 21, item 1), on the backend `POPHOST_TEST_BACKEND` picks: a
//! real `fetchmail` without `keep` retrieves and deletes; the help desk sees who deleted what
//! (`pophost user bin list`) and restores it as new, which fetchmail fetches again. fetchmail
//! forgets the UIDs of messages it deleted (its idfile keeps only those still on the server),
//! so a restore with the original UIDL is shown with getmail6, which remembers deleted UIDLs
//! for 30 days: it skips such a restore (CLI, API) and fetches one restored as new (admin UI).
//! Purging and the domain's settings go through the CLI and the API.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::*;

const USER: &str = "john@example.com";
const ADMIN: &str = "root@isp.example";
const ADMIN_PW: &str = "admin password 1";

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(out.status.success(), "{args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// fetchmail over `rc`, with its own id and pid files under `home`, at most 60 s.
fn fetchmail(home: &Path, rc: &Path) -> Output {
    Command::new("timeout")
        .args(["60", "fetchmail", "-f"])
        .arg(rc)
        .arg("--idfile")
        .arg(home.join("fetchids"))
        .arg("--pidfile")
        .arg(home.join("fetchmail.pid"))
        .args(["--nodetach", "-v"])
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run fetchmail")
}

/// What fetchmail handed its MDA since the last call.
fn take(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let _ = fs::remove_file(path);
    text.replace("\r\n", "\n")
}

fn subjects(text: &str) -> Vec<String> {
    let mut s: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Subject: "))
        .map(str::to_string)
        .collect();
    s.sort();
    s
}

/// The maildrop's UIDLs, by message number.
fn uidls(server: &Server) -> Vec<String> {
    let mut c = Pop3::login(server.pop3, USER);
    assert!(c.cmd("UIDL").starts_with("+OK"));
    let list = c
        .multi()
        .iter()
        .map(|l| l.split_once(' ').expect("UIDL line").1.to_string())
        .collect();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    list
}

/// The UIDLs `pophost user bin list` shows, newest first.
fn binned(server: &Server) -> Vec<String> {
    let out = cli_ok(server, &["user", "bin", "list", USER]);
    if out.contains("is empty") {
        return Vec::new();
    }
    out.lines()
        .map(|l| l.split(' ').next().expect("a UIDL").to_string())
        .collect()
}

/// A fetchmail rc that fetches with `uidl` and deletes (`nokeep`), handing messages to `out`.
fn fetchmail_rc(server: &Server, home: &Path, out: &Path) -> std::path::PathBuf {
    let rc = home.join("fetchmailrc");
    write_private(
        &rc,
        &format!(
            "set no syslog\n\
             poll 127.0.0.1 service {port} protocol pop3 auth password uidl\n  \
             user \"{USER}\" password \"{PASSWORD}\"\n  \
             sslproto ''\n  nokeep\n  \
             mda \"/bin/sh -c 'cat >> {out}'\"\n",
            port = server.pop3.port(),
            out = out.display()
        ),
    );
    rc
}

/// getmail6 over `state/getmailrc`: deletes what it retrieves (`delete = true`) and, unlike
/// fetchmail, remembers the UIDLs of messages it deleted (for 30 days), so it does not retrieve
/// them if they come back (it deletes them again, unread: they go back to the bin); appends what
/// it retrieves to `out`.
fn getmail(server: &Server, home: &Path, out: &Path) -> Output {
    let state = home.join("getmail");
    if !state.exists() {
        fs::create_dir(&state).expect("getmaildir");
        write_private(
            &state.join("getmailrc"),
            &format!(
                "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {port}\n\
                 username = {USER}\npassword = {PASSWORD}\n\n\
                 [destination]\ntype = MDA_external\npath = /bin/sh\n\
                 arguments = (\"-c\", \"cat >> {out}\")\nallow_root_commands = true\n\n\
                 [options]\ndelete = true\nread_all = false\nverbose = 2\n",
                port = server.pop3.port(),
                out = out.display()
            ),
        );
    }
    Command::new("timeout")
        .args(["60", "getmail", "--getmaildir"])
        .arg(&state)
        .args(["--rcfile", "getmailrc"])
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run getmail")
}

fn super_admin(server: &Server) -> AdminHttp {
    cli_ok(
        server,
        &["admin", "add", ADMIN, "--super", "--password", ADMIN_PW],
    );
    AdminHttp::sign_in(server.admin, ADMIN, ADMIN_PW)
}

#[test]
fn fetchmail_deletes_and_fetches_what_is_restored_as_new() {
    let server = Server::start();
    server.add_user(USER);
    for s in ["fm one", "fm two"] {
        deliver(&server, USER, &message(s));
    }
    let original = uidls(&server);
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    let outfile = home.join("delivered");
    let rc = fetchmail_rc(&server, home, &outfile);
    let out = fetchmail(home, &rc);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        subjects(&take(&outfile)),
        ["fm one", "fm two"],
        "{}",
        show(&out)
    );
    assert!(uidls(&server).is_empty(), "fetchmail deleted nothing");

    // The help desk sees every message, who deleted it, from where and how.
    let list = cli_ok(&server, &["user", "bin", "list", USER]);
    assert_eq!(list.lines().count(), 2, "{list}");
    for uid in &original {
        assert!(list.contains(uid.as_str()), "{uid} not in {list}");
    }
    assert!(list.contains("by POP3 session"), "{list}");
    assert!(list.contains("from 127.0.0.1 (USER)"), "{list}");

    let restored = cli_ok(
        &server,
        &["user", "bin", "restore", USER, "--all", "--as-new"],
    );
    assert!(restored.contains("restored 2 message(s)"), "{restored}");
    assert!(restored.contains("2 with a new UIDL"), "{restored}");
    let now = uidls(&server);
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|u| !original.contains(u)), "{now:?}");
    let out = fetchmail(home, &rc);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        subjects(&take(&outfile)),
        ["fm one", "fm two"],
        "{}",
        show(&out)
    );
    // Deleted again, binned again under their new UIDLs.
    let mut again = binned(&server);
    again.sort();
    let mut now = now;
    now.sort();
    assert_eq!(again, now);
}

#[test]
fn a_client_that_remembers_uidls_skips_original_restores_and_fetches_new_ones() {
    let server = Server::start();
    server.add_user(USER);
    for s in ["gm one", "gm two", "gm three"] {
        deliver(&server, USER, &message(s));
    }
    let original = uidls(&server);
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    let outfile = home.join("delivered");
    let out = getmail(&server, home, &outfile);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        subjects(&take(&outfile)),
        ["gm one", "gm three", "gm two"],
        "{}",
        show(&out)
    );
    assert!(uidls(&server).is_empty(), "getmail deleted nothing");
    assert_eq!(binned(&server).len(), 3);

    // With its UIDL (CLI): getmail has seen it and does not fetch it again (its `delete` deletes
    // it again, unread: no duplicate, and it is back in the bin).
    let restored = cli_ok(
        &server,
        &["user", "bin", "restore", USER, "--uidl", &original[0]],
    );
    assert!(restored.contains("restored 1 message"), "{restored}");
    assert_eq!(uidls(&server), vec![original[0].clone()]);
    let out = getmail(&server, home, &outfile);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(take(&outfile), "", "fetched again: {}", show(&out));
    assert!(binned(&server).contains(&original[0]));

    // As new from the admin UI: a new UIDL, and getmail fetches it.
    let admin = super_admin(&server);
    let page = admin.get("/domains/example.com/users/john");
    assert!(
        page.body.contains("id=\"bin-count\">3<"),
        "the user page counts the bin: {}",
        page.body
    );
    let page = admin.get("/domains/example.com/users/john/bin");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&original[1]), "{}", page.body);
    assert!(page.body.contains("from 127.0.0.1"), "{}", page.body);
    let label = format!("\" aria-label=\"Select {}\"", original[1]);
    let id = page
        .body
        .split("name=\"selected\" value=\"")
        .find_map(|rest| rest.split_once(&label).map(|(id, _)| id.to_string()))
        .expect("the checkbox of the second message");
    let res = admin.post(
        "/domains/example.com/users/john/bin/restore",
        &[("mode", "selected"), ("selected", &id), ("as_new", "on")],
    );
    assert_eq!(res.status, 303, "{}", res.body);
    let now = uidls(&server);
    assert_eq!(now.len(), 1);
    assert!(
        !original.contains(&now[0]),
        "as new kept an old UIDL: {now:?}"
    );
    let out = getmail(&server, home, &outfile);
    assert!(out.status.success(), "{}", show(&out));
    let got = subjects(&take(&outfile));
    assert_eq!(got, ["gm two"], "{}", show(&out));

    // The API: one restored with its UIDL is not fetched either; the audit log has them all.
    let res = admin.post("/tokens", &[("name", "e2e")]);
    let at = res.body.find("id=\"new-token\">").expect("the new token") + 15;
    let token = &res.body[at..at + res.body[at..].find('<').expect("end of token")];
    let api = |method: &str, path: &str, body: &str| {
        http(
            server.admin,
            method,
            &format!("/api/v1/domains/example.com{path}"),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    let r = api("GET", "/users/john/bin", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"total\":3"), "{}", r.body);
    assert!(r.body.contains("\"origin\":\"pop3\""), "{}", r.body);
    let r = api(
        "POST",
        "/users/john/bin/restore",
        &format!(r#"{{"uidls": ["{}"]}}"#, original[2]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"restored\":1"), "{}", r.body);
    assert!(r.body.contains("\"renumbered\":0"), "{}", r.body);
    let out = getmail(&server, home, &outfile);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(take(&outfile), "", "fetched again: {}", show(&out));
    assert_eq!(binned(&server).len(), 3);
    let audit = admin.get("/audit");
    assert!(audit.body.contains("user.bin.restore"), "{}", audit.body);

    // The domain's settings, in its JSON and changed through it.
    let r = api("GET", "", "");
    assert!(r.body.contains("\"bin_days\":7"), "{}", r.body);
    assert!(r.body.contains("\"bin_counts_quota\":false"), "{}", r.body);
    let r = api("PATCH", "", r#"{"bin_days": 0, "bin_counts_quota": true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"bin_days\":0"), "{}", r.body);
    assert!(r.body.contains("\"bin_counts_quota\":true"), "{}", r.body);
}

#[test]
fn the_cli_purges_and_a_domain_without_a_bin_deletes_for_good() {
    let server = Server::start();
    server.add_user(USER);
    for s in ["gone one", "gone two"] {
        deliver(&server, USER, &message(s));
    }
    let mut c = Pop3::login(server.pop3, USER);
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(binned(&server).len(), 1);
    let out = cli_ok(&server, &["user", "bin", "purge", USER]);
    assert!(out.contains("purged 1 message"), "{out}");
    assert!(binned(&server).is_empty());
    let out = cli_ok(&server, &["user", "bin", "restore", USER, "--all"]);
    assert!(out.contains("restored 0 message"), "{out}");

    cli_ok(
        &server,
        &["domain", "set", "example.com", "--bin-days", "0"],
    );
    let mut c = Pop3::login(server.pop3, USER);
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(binned(&server).is_empty(), "bin days 0 still binned");
    assert!(uidls(&server).is_empty());
    assert!(
        !server
            .cli(&["domain", "set", "example.com", "--bin-days", "99999"])
            .status
            .success()
    );
}

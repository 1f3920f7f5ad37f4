//! Real Debian mail clients (swaks, curl, fetchmail, mpop, getmail6) run as subprocesses against a
//! real `pophost serve`: LMTP delivery, listing, retrieval, deletion and leave-on-server via UIDL.

use crate::harness::{self, PASSWORD, Pop3, Server, show, write_private};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const USER: &str = "john@example.com";

/// A server with `USER` provisioned.
fn server() -> Server {
    let server = Server::start();
    server.add_user(USER);
    server
}

/// Delivers one `harness::message` per subject over LMTP.
fn deliver(server: &Server, subjects: &[&str]) {
    for s in subjects {
        harness::deliver(server, USER, &harness::message(s));
    }
}

/// `(messages, octets)` from a raw STAT (then QUIT, which deletes nothing).
fn stat(server: &Server) -> (usize, u64) {
    let mut c = Pop3::login(server.pop3, USER);
    let stat = c.stat();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    stat
}

/// A client command with a 60 s limit (so a hung exchange fails instead of blocking the suite),
/// `HOME` pointing at the test's temp dir and no stdin.
fn client(home: &Path, program: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", program])
        .env("HOME", home)
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Creates an empty Maildir (cur/new/tmp) under `root`.
fn maildir(root: &Path) -> PathBuf {
    let dir = root.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(dir.join(sub)).expect("create maildir");
    }
    dir
}

/// The contents of every message in `dir/new`.
fn maildir_new(dir: &Path) -> Vec<String> {
    fs::read_dir(dir.join("new"))
        .expect("read maildir")
        .map(|e| fs::read_to_string(e.expect("dir entry").path()).expect("read message"))
        .collect()
}

/// How many times a `Subject: {subject}` header line occurs across `texts` (CRLF or LF).
fn subject_count(texts: &[String], subject: &str) -> usize {
    let line = format!("\nSubject: {subject}\n");
    texts
        .iter()
        .map(|t| t.replace("\r\n", "\n").matches(&line).count())
        .sum()
}

/// Reads and removes a file the client appends to (empty when it was never written).
fn take(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let _ = fs::remove_file(path);
    text
}

fn swaks(server: &Server, home: &Path, to: &str, body: &str) -> Output {
    run(client(home, "swaks").args([
        "--protocol",
        "LMTP",
        "--server",
        &server.lmtp.to_string(),
        "--from",
        "sender@example.net",
        "--to",
        to,
        "--header",
        "Subject: via swaks",
        "--body",
        body,
    ]))
}

#[test]
fn swaks_delivers_over_lmtp() {
    let server = server();
    let tmp = tempfile::tempdir().expect("tempdir");
    let body = "first line\n.dotted line\n..two dots\nlast line\n";
    let out = swaks(&server, tmp.path(), USER, body);
    let transcript = show(&out);
    assert!(out.status.success(), "{transcript}");
    assert!(
        transcript.contains("<-  250 2.0.0"),
        "no 250 2.0.0 after DATA:\n{transcript}"
    );
    assert!(
        transcript.contains(" -> ..dotted line"),
        "swaks did not dot-stuff:\n{transcript}"
    );

    let mut pop = Pop3::login(server.pop3, USER);
    let (status, retr) = pop.fetch("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    let retr = String::from_utf8(retr).expect("utf8");
    for line in [
        "Subject: via swaks",
        "first line",
        ".dotted line",
        "..two dots",
        "last line",
    ] {
        assert!(
            retr.contains(&format!("\r\n{line}\r\n")),
            "missing {line:?} in RETR:\n{retr}"
        );
    }

    let out = swaks(&server, tmp.path(), "nobody@example.com", body);
    let transcript = show(&out);
    assert!(!out.status.success(), "{transcript}");
    assert!(transcript.contains("550 5.1.1"), "{transcript}");
}

fn curl(server: &Server, home: &Path, password: &str, path: &str, extra: &[&str]) -> Output {
    run(client(home, "curl")
        .args(["-sS", "--user", &format!("{USER}:{password}")])
        .args(extra)
        .arg(format!("pop3://{}/{path}", server.pop3)))
}

#[test]
fn curl_lists_and_retrieves() {
    let server = server();
    let tmp = tempfile::tempdir().expect("tempdir");
    deliver(&server, &["curl one", "curl two"]);

    let mut pop = Pop3::login(server.pop3, USER);
    let stat_reply = pop.cmd("STAT");
    assert!(pop.cmd("LIST").starts_with("+OK"));
    let list = pop.multi();
    let (status, retr2) = pop.fetch("RETR 2");
    assert!(status.starts_with("+OK"), "{status}");
    assert!(pop.cmd("QUIT").starts_with("+OK"));
    assert_eq!(list.len(), 2, "{list:?}");
    let total: usize = list
        .iter()
        .map(|l| {
            l.split_once(' ')
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .expect("LIST line")
        })
        .sum();
    assert_eq!(
        stat_reply,
        format!("+OK 2 {total}"),
        "STAT vs LIST {list:?}"
    );

    let out = curl(&server, tmp.path(), PASSWORD, "", &[]);
    assert!(out.status.success(), "{}", show(&out));
    let expected = format!("{}\r\n", list.join("\r\n"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "{}",
        show(&out)
    );

    let out = curl(&server, tmp.path(), PASSWORD, "2", &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        out.stdout == retr2,
        "curl RETR differs from raw RETR:\n{}",
        show(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\r\nSubject: curl two\r\n"), "{text}");
    assert!(
        text.contains("\r\n.leading dot\r\n"),
        "dot line not un-stuffed:\n{text}"
    );

    let out = curl(&server, tmp.path(), PASSWORD, "1", &["-X", "DELE", "-I"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        stat(&server).0,
        1,
        "DELE + QUIT from curl did not delete: {}",
        show(&out)
    );
    let (status, left) = Pop3::login(server.pop3, USER).fetch("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    assert_eq!(left, retr2, "the wrong message was deleted");

    let out = curl(&server, tmp.path(), "wrong password", "", &[]);
    assert_eq!(
        out.status.code(),
        Some(67),
        "expected login denied: {}",
        show(&out)
    );
}

/// A fetchmail run over `rc` with its own id and pid files.
fn fetchmail(home: &Path, rc: &Path, extra: &[&str]) -> Output {
    run(client(home, "fetchmail")
        .arg("-f")
        .arg(rc)
        .arg("--idfile")
        .arg(home.join("fetchids"))
        .arg("--pidfile")
        .arg(home.join("fetchmail.pid"))
        .args(["--nodetach", "-v"])
        .args(extra))
}

#[test]
fn fetchmail_keep_and_flush() {
    let server = server();
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    deliver(&server, &["fm one", "fm two"]);
    let outfile = home.join("delivered");
    let rc = home.join("fetchmailrc");
    write_private(
        &rc,
        &format!(
            "set no syslog\n\
             poll 127.0.0.1 service {port} protocol pop3 auth password uidl\n  \
             user \"{USER}\" password \"{PASSWORD}\"\n  \
             sslproto ''\n  keep\n  \
             mda \"/bin/sh -c 'cat >> {out}'\"\n",
            port = server.pop3.port(),
            out = outfile.display()
        ),
    );

    let out = fetchmail(home, &rc, &[]);
    let got = [take(&outfile)];
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for s in ["fm one", "fm two"] {
        assert_eq!(subject_count(&got, s), 1, "{s}: {}\n{}", got[0], show(&out));
    }
    assert_eq!(stat(&server).0, 2, "keep deleted messages: {}", show(&out));

    // Exit status 1 is fetchmail's "no mail".
    let out = fetchmail(home, &rc, &[]);
    let got = take(&outfile);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(got, "", "second keep run fetched again: {}", show(&out));
    assert_eq!(stat(&server).0, 2);

    let out = fetchmail(home, &rc, &["--nokeep", "--all"]);
    let got = [take(&outfile)];
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for s in ["fm one", "fm two"] {
        assert_eq!(subject_count(&got, s), 1, "{s}: {}\n{}", got[0], show(&out));
    }
    assert_eq!(stat(&server), (0, 0), "flush left mail: {}", show(&out));
}

#[test]
fn mpop_leave_on_server() {
    let server = server();
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    deliver(&server, &["mpop one", "mpop two"]);
    let md = maildir(home);
    let conf = home.join("mpoprc");
    write_private(
        &conf,
        &format!(
            "account default\nhost 127.0.0.1\nport {port}\nuser {USER}\npassword \"{PASSWORD}\"\n\
             tls off\nauth user\nkeep on\ndelivery maildir {md}\nuidls_file {uidls}\n",
            port = server.pop3.port(),
            md = md.display(),
            uidls = home.join("uidls").display()
        ),
    );
    let mpop = || {
        run(client(home, "mpop")
            .arg("-C")
            .arg(&conf)
            .arg("--half-quiet"))
    };

    let out = mpop();
    let got = maildir_new(&md);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(got.len(), 2, "{}", show(&out));
    for s in ["mpop one", "mpop two"] {
        assert_eq!(subject_count(&got, s), 1, "{s}: {got:?}");
    }

    deliver(&server, &["mpop three"]);
    let out = mpop();
    let got = maildir_new(&md);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        got.len(),
        3,
        "expected exactly one new message: {}",
        show(&out)
    );
    for s in ["mpop one", "mpop two", "mpop three"] {
        assert_eq!(subject_count(&got, s), 1, "{s}: {got:?}");
    }
    assert_eq!(stat(&server).0, 3, "keep on deleted mail: {}", show(&out));
}

/// getmail refuses to deliver to a Maildir as root; then it must deliver as an unprivileged user
/// (`user = nobody`), who needs to reach and own the Maildir.
fn getmail_delivery_user(tmp: &Path, md: &Path) -> &'static str {
    if fs::metadata(tmp).expect("stat tempdir").uid() != 0 {
        return "";
    }
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o711)).expect("chmod tempdir");
    let out = run(Command::new("chown").args(["-R", "nobody:"]).arg(md));
    assert!(out.status.success(), "{}", show(&out));
    "user = nobody\n"
}

#[test]
fn getmail_leave_on_server() {
    let server = server();
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    deliver(&server, &["gm one", "gm two"]);
    let md = maildir(home);
    let state = home.join("getmail");
    fs::create_dir(&state).expect("getmaildir");
    write_private(
        &state.join("getmailrc"),
        &format!(
            "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {port}\n\
             username = {USER}\npassword = {PASSWORD}\n\n\
             [destination]\ntype = Maildir\npath = {md}/\n{user}\n\
             [options]\ndelete = false\nread_all = false\n",
            port = server.pop3.port(),
            md = md.display(),
            user = getmail_delivery_user(home, &md)
        ),
    );
    let getmail = || {
        run(client(home, "getmail")
            .arg("--getmaildir")
            .arg(&state)
            .args(["--rcfile", "getmailrc"]))
    };

    let out = getmail();
    assert!(out.status.success(), "{}", show(&out));
    let got = maildir_new(&md);
    assert_eq!(got.len(), 2, "{}", show(&out));
    for s in ["gm one", "gm two"] {
        assert_eq!(subject_count(&got, s), 1, "{s}: {got:?}");
    }

    let out = getmail();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        maildir_new(&md).len(),
        2,
        "second run fetched again: {}",
        show(&out)
    );

    deliver(&server, &["gm three"]);
    let out = getmail();
    assert!(out.status.success(), "{}", show(&out));
    let got = maildir_new(&md);
    assert_eq!(
        got.len(),
        3,
        "expected exactly one new message: {}",
        show(&out)
    );
    for s in ["gm one", "gm two", "gm three"] {
        assert_eq!(subject_count(&got, s), 1, "{s}: {got:?}");
    }
    assert_eq!(
        stat(&server).0,
        3,
        "delete = false deleted mail: {}",
        show(&out)
    );
}

/// fetchmail over implicit TLS (POP3S, `ssl`) and over STLS on the plain port (`sslproto`
/// without `ssl`), against the self-signed certificate (so no certificate check).
#[test]
fn fetchmail_over_pop3s_and_stls() {
    let server = server();
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    deliver(&server, &["tls one"]);
    for (name, port, tls) in [
        ("pop3s", server.pop3s.port(), "ssl sslproto tls1.2+"),
        ("stls", server.pop3.port(), "sslproto tls1.2+"),
    ] {
        let outfile = home.join(format!("delivered-{name}"));
        let rc = home.join(format!("fetchmailrc-{name}"));
        write_private(
            &rc,
            &format!(
                "set no syslog\n\
                 poll 127.0.0.1 service {port} protocol pop3 auth password\n  \
                 user \"{USER}\" password \"{PASSWORD}\"\n  \
                 {tls} no sslcertck\n  keep fetchall\n  \
                 mda \"/bin/sh -c 'cat >> {out}'\"\n",
                out = outfile.display()
            ),
        );
        let out = fetchmail(home, &rc, &[]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", show(&out));
        let log = show(&out);
        assert!(
            log.contains("SSL") || log.contains("TLS"),
            "{name}: no TLS in the transcript: {log}"
        );
        assert_eq!(
            subject_count(&[take(&outfile)], "tls one"),
            1,
            "{name}: {log}"
        );
    }
}

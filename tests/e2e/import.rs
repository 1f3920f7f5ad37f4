//! `pophost import` (issue 6): a customer moved in from a real Dovecot (Debian's, started from
//! bench/dovecot on loopback) keeps every POP3 UIDL, so `mpop` in leave-on-server
//! mode, having fetched everything from Dovecot, downloads nothing again from pophost; and the
//! mbox importer keeps `X-UIDL:` ids and reports the ones RFC 1939 does not allow.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::{PASSWORD, Pop3, Server, message, show, write_private};

const USER: &str = "john@example.com";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A private Dovecot on loopback, stopped (by its own script) when dropped.
struct Dovecot {
    anchor: tempfile::TempDir,
    pop3: SocketAddr,
    lmtp: SocketAddr,
}

impl Dovecot {
    fn scripts() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/dovecot")
    }

    fn script(&self, name: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(Self::scripts().join(name))
            .env("ANCHOR", self.anchor.path())
            .env("POP3_PORT", self.pop3.port().to_string())
            .env("POP3S_PORT", free_port().to_string())
            .env("LMTP_PORT", self.lmtp.port().to_string())
            .stdin(Stdio::null());
        c
    }

    fn start() -> Dovecot {
        assert!(
            Path::new("/usr/sbin/dovecot").exists() && Path::new("/usr/lib/dovecot/lmtp").exists(),
            "Dovecot is needed: apt-get install dovecot-pop3d dovecot-lmtpd argon2 (scripts/test does)"
        );
        let d = Dovecot {
            anchor: tempfile::tempdir().expect("tempdir"),
            pop3: SocketAddr::from(([127, 0, 0, 1], free_port())),
            lmtp: SocketAddr::from(([127, 0, 0, 1], free_port())),
        };
        // Dovecot's processes (as user dovecot / uid 5000) must reach the directory.
        let mut perms = fs::metadata(d.anchor.path()).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(d.anchor.path(), perms).expect("chmod");
        // Not `output()`: the daemon inherits the script's stdout and would keep it open.
        let up = d
            .script("dovecot-up.sh")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("dovecot-up");
        assert!(
            up.success(),
            "dovecot-up.sh failed: {}",
            fs::read_to_string(d.anchor.path().join("log/dovecot.log")).unwrap_or_default()
        );
        ok(d.script("dovecot-provision.sh")
            .args(["add-domain", "example.com"])
            .output()
            .expect("provision"));
        ok(d.script("dovecot-provision.sh")
            .args(["add-user", USER, PASSWORD])
            .output()
            .expect("provision"));
        d
    }

    fn maildir(&self) -> PathBuf {
        self.anchor.path().join("mail/example.com/john")
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self
            .script("dovecot-down.sh")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `(number, uidl)` pairs of a raw UIDL listing.
fn uidl_listing(addr: SocketAddr) -> Vec<String> {
    let mut c = Pop3::login(addr, USER);
    assert!(c.cmd("UIDL").starts_with("+OK"));
    let lines = c.multi();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    lines
}

/// mpop in leave-on-server mode, delivering into `home/Maildir`, remembering UIDLs in
/// `home/uidls`; returns how many messages the local Maildir holds afterwards.
fn mpop(home: &Path, server: SocketAddr) -> usize {
    let md = home.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(md.join(sub)).expect("maildir");
    }
    let conf = home.join("mpoprc");
    // Same client state (uidls, Maildir) each time; only the server's port changes.
    let _ = fs::remove_file(&conf);
    write_private(
        &conf,
        &format!(
            "account default\nhost 127.0.0.1\nport {port}\nuser {USER}\npassword \"{PASSWORD}\"\n\
             tls off\nauth user\nkeep on\ndelivery maildir {md}\nuidls_file {uidls}\n",
            port = server.port(),
            md = md.display(),
            uidls = home.join("uidls").display()
        ),
    );
    let out = Command::new("timeout")
        .args(["120", "mpop", "-C"])
        .arg(&conf)
        .arg("--half-quiet")
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run mpop");
    assert!(out.status.success(), "{}", show(&out));
    fs::read_dir(md.join("new")).expect("read maildir").count()
}

#[test]
fn a_dovecot_maildir_moves_in_and_mpop_downloads_nothing_again() {
    const MESSAGES: usize = 25;
    let dovecot = Dovecot::start();
    for i in 0..MESSAGES {
        let replies = crate::harness::Lmtp::connect(dovecot.lmtp).deliver(
            "sender@example.net",
            &[USER],
            &message(&format!("dovecot {i}")),
        );
        assert!(replies[0].starts_with("250"), "{replies:?}");
    }
    // The client has everything, left on the server; Dovecot has assigned its UIDLs.
    let home = tempfile::tempdir().expect("home");
    assert_eq!(mpop(home.path(), dovecot.pop3), MESSAGES);
    let at_dovecot = uidl_listing(dovecot.pop3);
    assert_eq!(at_dovecot.len(), MESSAGES);

    let s = Server::start();
    s.add_user(USER);
    let maildir = dovecot.maildir();
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

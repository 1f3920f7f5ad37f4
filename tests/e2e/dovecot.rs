//! A private Dovecot 2.3 on loopback (Debian's, started from bench/dovecot), as the old server
//! customers move in from (tests/e2e/import.rs, tests/e2e/migrate.rs); and mpop in
//! leave-on-server mode, the client whose state must survive the move.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::{Lmtp, free_port, show, write_private};

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A private Dovecot on loopback, stopped (by its own script) when dropped. POP3 offers STLS;
/// POP3 and POP3S present a certificate for `localhost` and 127.0.0.1 signed by `ca_file()`.
pub struct Dovecot {
    anchor: tempfile::TempDir,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    pub lmtp: SocketAddr,
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
            .env("POP3S_PORT", self.pop3s.port().to_string())
            .env("LMTP_PORT", self.lmtp.port().to_string())
            .stdin(Stdio::null());
        c
    }

    /// Starts Dovecot with no users (`add_user` adds them, and their domains).
    pub fn start() -> Dovecot {
        assert!(
            Path::new("/usr/sbin/dovecot").exists() && Path::new("/usr/lib/dovecot/lmtp").exists(),
            "Dovecot is needed: apt-get install dovecot-pop3d dovecot-lmtpd argon2 (scripts/test does)"
        );
        let d = Dovecot {
            anchor: tempfile::tempdir().expect("tempdir"),
            pop3: SocketAddr::from(([127, 0, 0, 1], free_port())),
            pop3s: SocketAddr::from(([127, 0, 0, 1], free_port())),
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
        d
    }

    /// The CA (made by dovecot-up.sh) that signed the certificate Dovecot's POP3S (and STLS)
    /// presents.
    pub fn ca_file(&self) -> PathBuf {
        self.anchor.path().join("ssl/ca.pem")
    }

    /// Adds `address` (and its domain) with the provisioning script's default password hash
    /// (ARGON2ID).
    pub fn add_user(&self, address: &str, password: &str) {
        self.add_user_with_scheme(address, password, "ARGON2ID");
    }

    /// Adds `address` with its password hashed in `scheme` (`PW_SCHEME`: any scheme
    /// `doveadm pw -l` lists, e.g. SHA512-CRYPT).
    pub fn add_user_with_scheme(&self, address: &str, password: &str, scheme: &str) {
        let domain = address.rsplit('@').next().expect("domain");
        ok(self
            .script("dovecot-provision.sh")
            .args(["add-domain", domain])
            .output()
            .expect("provision"));
        ok(self
            .script("dovecot-provision.sh")
            .args(["add-user", address, password])
            .env("PW_SCHEME", scheme)
            .output()
            .expect("provision"));
    }

    /// Delivers over Dovecot's LMTP and asserts it was accepted.
    pub fn deliver(&self, rcpt: &str, message: &[u8]) {
        let replies = Lmtp::connect(self.lmtp).deliver("sender@example.net", &[rcpt], message);
        assert!(replies[0].starts_with("250"), "{replies:?}");
    }

    /// Dovecot's passwd-file for `domain`, as one file (dovecot-provision.sh keeps one per
    /// user, `user@domain:{SCHEME}hash:uid:gid::home::extra`).
    pub fn passwd_file(&self, domain: &str) -> String {
        let dir = self.anchor.path().join("etc/passwd.d").join(domain);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("passwd.d")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| fs::read_to_string(f).expect("passwd file"))
            .collect()
    }

    /// The user's Maildir.
    pub fn maildir(&self, address: &str) -> PathBuf {
        let (local, domain) = address.split_once('@').expect("address");
        self.anchor.path().join("mail").join(domain).join(local)
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

/// mpop in leave-on-server mode (USER/PASS, no TLS), delivering into `home/Maildir`,
/// remembering UIDLs in `home/uidls`; returns how many messages the local Maildir holds
/// afterwards. The same `home` is the same client state whichever server it is pointed at.
pub fn mpop(home: &Path, server: SocketAddr, user: &str, password: &str) -> usize {
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
            "account default\nhost 127.0.0.1\nport {port}\nuser {user}\npassword \"{password}\"\n\
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

/// fetchmail --keep with UIDLs remembered in `home/fetchids`, no TLS; returns its exit code
/// and how many messages it delivered this run.
pub fn fetchmail(
    home: &Path,
    server: SocketAddr,
    user: &str,
    password: &str,
) -> (Option<i32>, usize) {
    let rc = home.join("fetchmailrc");
    let out_file = home.join("delivered");
    let _ = fs::remove_file(&rc);
    let _ = fs::remove_file(&out_file);
    write_private(
        &rc,
        &format!(
            "set no syslog\n\
             poll 127.0.0.1 service {port} protocol pop3 auth password uidl\n  \
             user \"{user}\" password \"{password}\"\n  \
             sslproto ''\n  \
             mda \"/bin/sh -c 'cat >> {out}'\"\n",
            port = server.port(),
            out = out_file.display()
        ),
    );
    let out = Command::new("timeout")
        .args(["60", "fetchmail", "--keep", "--nodetach", "-f"])
        .arg(&rc)
        .arg("--idfile")
        .arg(home.join("fetchids"))
        .arg("--pidfile")
        .arg(home.join("fetchmail.pid"))
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run fetchmail");
    let delivered = fs::read_to_string(&out_file).unwrap_or_default();
    let n = delivered
        .lines()
        .filter(|l| l.starts_with("Subject: "))
        .count();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "fetchmail: {}",
        show(&out)
    );
    (out.status.code(), n)
}

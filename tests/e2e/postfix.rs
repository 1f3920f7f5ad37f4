//! A real Postfix (Debian's) in front of pophost (issue "MTA side", item 4): SMTP AUTH checked
//! by pophost's SMTP AUTH service, recipients looked up in its socketmap, full mailboxes refused
//! by its policy service, and mail delivered to it over LMTP. Postfix runs as a private
//! instance in a temp directory, listening on a loopback port.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::harness::{Data, PASSWORD, Pop3, Server, free_port, show};

const JOHN: &str = "john@example.com";
const MARY: &str = "mary@example.com";

/// The ports pophost serves the MTA on, fixed before it starts so that Postfix's config and a
/// restarted pophost agree on them.
struct Ports {
    lmtp: u16,
    sasl: u16,
    socketmap: u16,
    policy: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            lmtp: free_port(),
            sasl: free_port(),
            socketmap: free_port(),
            policy: free_port(),
        }
    }

    /// `pophost serve` on `data` with the MTA services on these ports.
    fn serve(&self, data: Data) -> Server {
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let (lmtp, sasl, socketmap, policy) = (
            addr(self.lmtp),
            addr(self.sasl),
            addr(self.socketmap),
            addr(self.policy),
        );
        Server::spawn(
            data,
            &[
                "--lmtp-listen",
                &lmtp,
                "--sasl-listen",
                &sasl,
                "--socketmap-listen",
                &socketmap,
                "--policy-listen",
                &policy,
            ],
        )
    }
}

/// `postfix -c DIR` is refused unless DIR is listed in the main instance's
/// `alternate_config_directories`; tests add and remove theirs one at a time.
static ALTERNATES: Mutex<()> = Mutex::new(());

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run")
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn alternates() -> Vec<String> {
    ok(Command::new("postconf").args(["-h", "alternate_config_directories"]))
        .split([',', ' ', '\n'])
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

fn set_alternates(dirs: &[String]) {
    ok(Command::new("postconf").args([
        "-e",
        &format!("alternate_config_directories = {}", dirs.join(" ")),
    ]));
}

/// A private Postfix instance; stopped when dropped. Like an ISP's, it has an MX port (no
/// AUTH) and a submission port (AUTH through pophost).
struct Postfix {
    dir: tempfile::TempDir,
    smtp: SocketAddr,
    submission: SocketAddr,
}

impl Postfix {
    /// Asks pophost over TCP on `ports`, or (`unix`) over UNIX sockets in its queue directory's
    /// `private/`, where a chrooted Postfix reaches them (`pophost_sockets` is pophost's side).
    fn start(ports: &Ports, unix: bool) -> Postfix {
        assert!(
            Path::new("/usr/sbin/postfix").exists(),
            "Postfix is needed: apt-get install postfix (scripts/test does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let smtp = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let submission = SocketAddr::from(([127, 0, 0, 1], free_port()));
        fs::copy("/etc/postfix/master.cf", dir.path().join("master.cf")).expect("master.cf");
        fs::write(
            dir.path().join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {d}/queue\n\
                 data_directory = {d}/data\n\
                 maillog_file = {d}/maillog\n\
                 maillog_file_prefixes = {d}\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 myhostname = mx.pophost.test\n\
                 mydestination =\n\
                 mynetworks = 192.0.2.0/24\n\
                 biff = no\n\
                 smtputf8_enable = no\n\
                 virtual_mailbox_domains = socketmap:{map}:domain\n\
                 virtual_mailbox_maps = socketmap:{map}:mailbox\n\
                 virtual_transport = lmtp:inet:127.0.0.1:{lmtp}\n\
                 smtpd_sasl_type = dovecot\n\
                 smtpd_sasl_path = {sasl}\n\
                 smtpd_recipient_restrictions = check_policy_service {policy}\n\
                 minimal_backoff_time = 1s\n\
                 maximal_backoff_time = 2s\n\
                 queue_run_delay = 1s\n",
                map = if unix {
                    "unix:private/pophost-socketmap".to_string()
                } else {
                    format!("inet:127.0.0.1:{}", ports.socketmap)
                },
                lmtp = ports.lmtp,
                sasl = if unix {
                    "private/pophost-auth".to_string()
                } else {
                    format!("inet:127.0.0.1:{}", ports.sasl)
                },
                policy = if unix {
                    "unix:private/pophost-policy".to_string()
                } else {
                    format!("inet:127.0.0.1:{}", ports.policy)
                },
            ),
        )
        .expect("main.cf");
        // No chroot (the private instance has none set up), and smtpd on our ports instead of 25
        // and 587.
        ok(Command::new("postconf").args(["-c", &d, "-F", "*/*/chroot = n"]));
        ok(Command::new("postconf").args(["-c", &d, "-MX", "smtp/inet"]));
        let port = smtp.port();
        ok(Command::new("postconf").args([
            "-c",
            &d,
            "-M",
            &format!("{port}/inet={port} inet n - n - - smtpd"),
        ]));
        let port = submission.port();
        ok(Command::new("postconf").args([
            "-c",
            &d,
            "-M",
            &format!("{port}/inet={port} inet n - n - - smtpd -o smtpd_sasl_auth_enable=yes"),
        ]));
        for sub in ["queue", "data"] {
            fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        {
            let _one = ALTERNATES.lock().unwrap_or_else(|e| e.into_inner());
            let mut dirs = alternates();
            dirs.push(d.clone());
            set_alternates(&dirs);
        }
        ok(Command::new("postfix").args(["-c", &d, "set-permissions"]));
        ok(Command::new("postfix").args(["-c", &d, "start"]));
        let p = Postfix {
            dir,
            smtp,
            submission,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(smtp).is_err()
            || std::net::TcpStream::connect(submission).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "Postfix did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// pophost's config for the UNIX sockets `start(_, true)` points Postfix at: in the queue
    /// directory's `private/`, owned by the user Postfix's daemons run as.
    fn pophost_sockets(&self) -> String {
        let private = self.dir.path().join("queue/private");
        let p = |name: &str| private.join(name).display().to_string();
        format!(
            "[sasl_service]\nsocket = \"{}\"\nsocket_owner = \"postfix\"\n\
             [postfix]\nsocketmap_socket = \"{}\"\npolicy_socket = \"{}\"\nsocket_owner = \"postfix\"\n",
            p("pophost-auth"),
            p("pophost-socketmap"),
            p("pophost-policy"),
        )
    }

    fn config_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// `postqueue -f`: retry every queued message now.
    fn flush(&self) {
        ok(Command::new("postqueue").args(["-c", &self.config_dir(), "-f"]));
    }

    /// `postfix reload`.
    fn reload(&self) {
        ok(Command::new("postfix").args(["-c", &self.config_dir(), "reload"]));
    }

    /// `postqueue -p`.
    fn queue(&self) -> String {
        ok(Command::new("postqueue").args(["-c", &self.config_dir(), "-p"]))
    }

    /// Hands a message to Postfix's `sendmail` (not over SMTP, so nothing is looked up before
    /// it is queued).
    fn sendmail(&self, to: &str, subject: &str) {
        use std::io::Write;
        let mut child = Command::new("sendmail")
            .args(["-C", &self.config_dir(), "-f", "alice@example.net", to])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sendmail");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("Subject: {subject}\n\nqueued while pophost was down\n").as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("sendmail");
        assert!(out.status.success(), "sendmail: {}", show(&out));
    }

    /// swaks to this Postfix's MX port with `args`; whether it succeeded, and its output.
    fn swaks(&self, args: &[&str]) -> (bool, String) {
        self.swaks_to(self.smtp, args)
    }

    /// swaks to the submission port.
    fn submit(&self, args: &[&str]) -> (bool, String) {
        self.swaks_to(self.submission, args)
    }

    fn swaks_to(&self, server: SocketAddr, args: &[&str]) -> (bool, String) {
        // Postfix's master starts smtpd on the first connection; on a loaded machine the greeting
        // has come after swaks's default 30 s (seen once in CI): wait as long as the other steps.
        let out = run(Command::new("swaks")
            .args(["--server", &server.to_string(), "--helo", "client.test"])
            .args(["--timeout", "120"])
            .args(["--from", "alice@example.net"])
            .args(args));
        (out.status.success(), show(&out))
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let d = self.config_dir();
        let _ = run(Command::new("postfix").args(["-c", &d, "stop"]));
        let _one = ALTERNATES.lock().unwrap_or_else(|e| e.into_inner());
        let dirs: Vec<String> = alternates().into_iter().filter(|x| *x != d).collect();
        set_alternates(&dirs);
    }
}

/// Messages in `user`'s pophost mailbox, once it has `want` (or after 30 s, whatever it has).
fn mailbox(server: &Server, user: &str, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = Pop3::login(server.pop3, user).stat().0;
        if n >= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn provision(server: &Server) {
    server.add_user(JOHN);
    server.add_user(MARY);
    // Mary's mailbox takes one message.
    let out = server.cli(&["user", "set", MARY, "--quota-messages", "1"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = server.cli(&["domain", "alias", "add", "example.org", "example.com"]);
    assert!(out.status.success(), "{}", show(&out));
}

/// Postfix asks pophost over UNIX sockets in its `private/` directory (as a chrooted Postfix
/// would); the other tests use TCP.
#[test]
fn postfix_authenticates_looks_up_and_delivers_through_pophost() {
    let ports = Ports::new();
    let postfix = Postfix::start(&ports, true);
    let server = ports.serve(Data::new().with_config(&postfix.pophost_sockets()));
    provision(&server);

    // SMTP AUTH with the POP3 password, PLAIN and LOGIN; the SDPS form names the same account.
    for (mech, user) in [
        ("PLAIN", JOHN),
        ("LOGIN", JOHN),
        ("PLAIN", "john%example.com"),
    ] {
        let (ok, out) = postfix.submit(&[
            "--to",
            JOHN,
            "--auth",
            mech,
            "--auth-user",
            user,
            "--auth-password",
            PASSWORD,
            "--quit-after",
            "AUTH",
        ]);
        assert!(
            ok && out.contains("235 "),
            "{mech} {user}: {out}\n{}",
            postfix.log()
        );
    }
    let (ok, out) = postfix.submit(&[
        "--to",
        JOHN,
        "--auth",
        "PLAIN",
        "--auth-user",
        JOHN,
        "--auth-password",
        "not the password",
        "--quit-after",
        "AUTH",
    ]);
    assert!(!ok && out.contains("535 "), "{out}");

    // A message through Postfix lands in pophost and a POP3 client reads it, also through an
    // alias domain.
    let (ok, out) = postfix.swaks(&["--to", JOHN, "--header", "Subject: via postfix"]);
    assert!(ok, "{out}\n{}", postfix.log());
    let (ok, out) = postfix.swaks(&["--to", "john@example.org"]);
    assert!(ok, "{out}\n{}", postfix.log());
    assert_eq!(mailbox(&server, JOHN, 2), 2, "{}", postfix.log());
    let mut c = Pop3::login(server.pop3, JOHN);
    let (status, body) = c.fetch("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    assert!(
        String::from_utf8_lossy(&body).contains("Subject: via postfix"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    c.cmd("QUIT");

    // Unknown recipients and full mailboxes are refused at RCPT, by Postfix, before DATA.
    let (ok, out) = postfix.swaks(&["--to", "nobody@example.com"]);
    assert!(!ok && out.contains("<** 550 "), "{out}");
    assert!(!out.contains("DATA"), "refused before DATA: {out}");
    // A domain pophost does not host is not Postfix's to accept either (Postfix defers
    // unauthorised relaying with 454 by default).
    let (ok, out) = postfix.swaks(&["--to", "john@not-hosted.example"]);
    assert!(!ok && out.contains("Relay access denied"), "{out}");
    let (ok, out) = postfix.swaks(&["--to", MARY]);
    assert!(ok, "{out}");
    assert_eq!(mailbox(&server, MARY, 1), 1);
    let (ok, out) = postfix.swaks(&["--to", MARY]);
    assert!(!ok && out.contains("<** 552 5.2.2"), "{out}");
    assert!(!out.contains("DATA"), "refused before DATA: {out}");
}

/// Python's `smtplib` through Postfix's submission port with SASL `mech`, the base64 of
/// `message` as the initial response (as Thunderbird sends XOAUTH2 and OAUTHBEARER over SMTP):
/// the server's reply code to AUTH.
const SMTPLIB_BEARER: &str = r#"
import base64, smtplib, sys
host, port, mech, message = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = smtplib.SMTP(host, port, timeout=120)
s.ehlo('client.test')
print('offered', s.esmtp_features.get('auth', ''))
code, text = s.docmd('AUTH', mech + ' ' + base64.b64encode(message.encode()).decode())
print('auth', code)
if code == 334:
    code, text = s.docmd('AQ==' if mech == 'OAUTHBEARER' else '')
    print('final', code)
s.quit()
"#;

fn smtplib_bearer(postfix: &Postfix, mech: &str, message: &[u8]) -> String {
    let out = run(Command::new("python3").args([
        "-c",
        SMTPLIB_BEARER,
        "127.0.0.1",
        &postfix.submission.port().to_string(),
        mech,
        std::str::from_utf8(message).expect("utf-8"),
    ]));
    assert!(out.status.success(), "{}\n{}", show(&out), postfix.log());
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A real Postfix authenticates customers' devices the modern ways (issue 22): an app password
/// (swaks, PLAIN and LOGIN) and an OAuth token (Python's smtplib, XOAUTH2 and OAUTHBEARER) log in
/// for SMTP submission through pophost's auth service; a revoked app password and a token for
/// another mailbox are refused; with `--app-passwords-only` the main password is refused too.
#[test]
fn postfix_takes_app_passwords_and_oauth_tokens_for_submission() {
    use tenancy::oauth::testing::{self, TestKey};

    use crate::oauth::{JwksServer, set_oauth, token_for};

    let ports = Ports::new();
    let server = ports.serve(Data::new());
    provision(&server);
    let key = TestKey::ec("ec-1");
    let jwks = JwksServer::start(testing::jwks(&[&key]));
    // Before Postfix's first smtpd asks pophost for its mechanisms.
    set_oauth(&server, &jwks.url);
    let out = server.cli(&["user", "app-password", "add", JOHN, "--label", "phone"]);
    assert!(out.status.success(), "{}", show(&out));
    let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let postfix = Postfix::start(&ports, false);

    let submit = |mech: &str, password: &str| {
        postfix.submit(&[
            "--to",
            JOHN,
            "--auth",
            mech,
            "--auth-user",
            JOHN,
            "--auth-password",
            password,
            "--quit-after",
            "AUTH",
        ])
    };
    for mech in ["PLAIN", "LOGIN"] {
        let (ok, out) = submit(mech, &device);
        assert!(
            ok && out.contains("235 "),
            "{mech}: {out}\n{}",
            postfix.log()
        );
    }
    let listed = server.cli(&["user", "app-password", "list", JOHN]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains("MTA"), "last use recorded: {listed}");

    let token = token_for(&key, JOHN);
    for (mech, message) in [
        ("XOAUTH2", testing::xoauth2(JOHN, &token)),
        ("OAUTHBEARER", testing::oauthbearer(JOHN, &token)),
    ] {
        let out = smtplib_bearer(&postfix, mech, &message);
        assert!(out.contains(mech), "offered by Postfix: {out}");
        assert!(out.contains("auth 235"), "{mech}: {out}\n{}", postfix.log());
    }
    // Mary's token is no key to John's mailbox.
    let marys = token_for(&key, MARY);
    let out = smtplib_bearer(&postfix, "XOAUTH2", &testing::xoauth2(JOHN, &marys));
    assert!(!out.contains(" 235") && out.contains(" 535"), "{out}");

    let out = server.cli(&["user", "app-password", "revoke", JOHN, "--label", "phone"]);
    assert!(out.status.success(), "{}", show(&out));
    let (ok, out) = submit("PLAIN", &device);
    assert!(!ok && out.contains("535 "), "revoked: {out}");
    let (ok, out) = submit("PLAIN", PASSWORD);
    assert!(ok && out.contains("235 "), "main password: {out}");
    let out = server.cli(&[
        "domain",
        "set",
        "example.com",
        "--app-passwords-only",
        "true",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let (ok, out) = submit("PLAIN", PASSWORD);
    assert!(!ok && out.contains("535 "), "app passwords only: {out}");
}

#[test]
fn postfix_defers_while_pophost_is_down_and_delivers_each_message_once_after() {
    let ports = Ports::new();
    let server = ports.serve(Data::new());
    server.add_user(JOHN);
    let postfix = Postfix::start(&ports, false);
    let data = server.kill9();

    // Over SMTP the recipient cannot be looked up: a temporary refusal, nothing lost.
    let (ok, out) = postfix.swaks(&["--to", JOHN]);
    assert!(!ok && out.contains("<** 4"), "{out}");
    // Handed to sendmail, messages wait in Postfix's queue.
    for i in 0..3 {
        postfix.sendmail(JOHN, &format!("queued {i}"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while postfix.queue().matches(JOHN).count() < 3 {
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            postfix.queue(),
            postfix.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let server = ports.serve(data);
    // Postfix's address resolver keeps a failed lookup for a while; a reload makes it ask again
    // at once instead of within a minute or so.
    postfix.reload();
    postfix.flush();
    assert_eq!(mailbox(&server, JOHN, 3), 3, "{}", postfix.log());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !postfix.queue().contains("Mail queue is empty") {
        assert!(Instant::now() < deadline, "{}", postfix.queue());
        std::thread::sleep(Duration::from_millis(200));
    }
    postfix.flush();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        Pop3::login(server.pop3, JOHN).stat().0,
        3,
        "each message once"
    );
}

/// SMTP AUTH failures count against the SMTP client's address like POP3 failures do, in the
/// same counters: three guesses through Postfix and two over POP3 from one address are the five
/// that make John's next login from it wait.
#[test]
fn smtp_and_pop3_failures_add_up_for_one_address() {
    let ports = Ports::new();
    let server = ports.serve(Data::new().with_config("[auth]\nfailure_delay_ms = 0\n"));
    server.add_user(JOHN);
    let postfix = Postfix::start(&ports, false);
    for _ in 0..3 {
        let (ok, out) = postfix.submit(&[
            "--to",
            JOHN,
            "--auth",
            "PLAIN",
            "--auth-user",
            JOHN,
            "--auth-password",
            "a guess",
            "--quit-after",
            "AUTH",
        ]);
        assert!(!ok && out.contains("535 "), "{out}");
    }
    let pop3 = |password: &str| {
        let mut c = Pop3::connect(server.pop3);
        assert!(c.cmd(&format!("USER {JOHN}")).starts_with("+OK"));
        let started = Instant::now();
        let reply = c.cmd(&format!("PASS {password}"));
        (reply, started.elapsed())
    };
    for _ in 0..2 {
        let (reply, took) = pop3("another guess");
        assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
        assert!(
            took < Duration::from_secs(1),
            "fewer than five so far: {took:?}"
        );
    }
    let (reply, took) = pop3(PASSWORD);
    assert!(reply.starts_with("+OK"), "{reply}");
    assert!(
        took >= Duration::from_secs(1),
        "five failures in all: {took:?}"
    );
}

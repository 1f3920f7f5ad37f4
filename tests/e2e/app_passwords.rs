//! App passwords (issue 22, item 1) end to end, on SQLite or Postgres
//! (`POPHOST_TEST_BACKEND`): made with the CLI, they log in with Python's `poplib` (USER/PASS),
//! SASL PLAIN, SCRAM-SHA-256 (the Python client of `sasl.rs`) and the MTA's SMTP AUTH service
//! (the Dovecot auth protocol, spoken here as Postfix speaks it); their last use is listed;
//! revoking one ends that device's open POP3 session only; a domain that requires app passwords
//! refuses the main password over POP3 and the MTA.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::harness::{Data, PASSWORD, Pop3, Server, deliver, free_port, message, show};
use crate::sasl::scram;

const JOHN: &str = "john@example.com";

/// pophost with leases renewed every second (so an ended session is noticed at once) and the
/// MTA's SMTP AUTH service on a port of its own.
fn serve() -> (Server, SocketAddr) {
    let sasl: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let server = Server::spawn(
        Data::new().with_config("[locks]\nttl_secs = 3\n"),
        &["--sasl-listen", &sasl.to_string()],
    );
    server.add_user(JOHN);
    deliver(&server, JOHN, &message("hello"));
    (server, sasl)
}

/// `pophost user app-password add`: standard output is the password and nothing else.
fn add(server: &Server, label: &str) -> String {
    let out = server.cli(&["user", "app-password", "add", JOHN, "--label", label]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let password = stdout.trim_end_matches('\n');
    assert!(!password.contains('\n'), "only the password: {stdout:?}");
    let groups: Vec<&str> = password.split('-').collect();
    assert_eq!(groups.len(), 7, "{password}");
    assert!(
        groups.iter().all(|g| g.len() == 4
            && g.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))),
        "{password}"
    );
    password.to_string()
}

fn list(server: &Server) -> String {
    let out = server.cli(&["user", "app-password", "list", JOHN]);
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// USER/PASS, STAT and QUIT with Python's poplib; "ok N" or the error it raised.
fn poplib(server: &Server, user: &str, password: &str) -> String {
    const CLIENT: &str = r#"
import poplib, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    p = poplib.POP3(host, port, timeout=30)
    p.user(user)
    p.pass_(pw)
    print('ok', p.stat()[0])
    p.quit()
except poplib.error_proto as e:
    print('error', e)
"#;
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", CLIENT])
        .arg(server.pop3.ip().to_string())
        .arg(server.pop3.port().to_string())
        .args([user, password])
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn plain(server: &Server, user: &str, password: &str) -> String {
    let mut c = Pop3::connect(server.pop3);
    let resp = STANDARD.encode(format!("\0{user}\0{password}"));
    let reply = c.cmd(&format!("AUTH PLAIN {resp}"));
    if reply.starts_with("+OK") {
        c.cmd("QUIT");
    }
    reply
}

/// One SMTP AUTH PLAIN check through the MTA's auth service, as Postfix asks it over TLS:
/// the service's `OK`/`FAIL` line.
fn mta_auth(sasl: SocketAddr, user: &str, password: &str) -> String {
    let stream = TcpStream::connect(sasl).expect("connect to the SMTP AUTH service");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    w.write_all(b"VERSION\t1\t2\nCPID\t4242\n")
        .expect("handshake");
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("greeting");
        if line.trim_end() == "DONE" {
            break;
        }
        assert!(!line.is_empty(), "the service hung up");
    }
    let resp = STANDARD.encode(format!("\0{user}\0{password}"));
    w.write_all(
        format!(
            "AUTH\t1\tPLAIN\tservice=smtp\tlip=127.0.0.1\trip=127.0.0.1\tsecured\tresp={resp}\n"
        )
        .as_bytes(),
    )
    .expect("auth");
    line.clear();
    r.read_line(&mut line).expect("answer");
    line.trim_end().to_string()
}

#[test]
fn an_app_password_logs_in_over_pop3_scram_and_the_mta_and_records_its_use() {
    let (server, sasl) = serve();
    assert!(list(&server).contains("has no app passwords"));
    let pw = add(&server, "Anna's phone");
    let plain_form = pw.replace('-', "");

    assert_eq!(poplib(&server, JOHN, &pw), "ok 1");
    // Typed without the dashes, with spaces, in capitals: the same password.
    assert_eq!(poplib(&server, JOHN, &plain_form.to_uppercase()), "ok 1");
    assert!(plain(&server, JOHN, &pw.replace('-', " ")).starts_with("+OK"));
    let mut c = Pop3::connect(server.pop3);
    c.cmd("AUTH LOGIN");
    c.cmd(&STANDARD.encode(JOHN));
    assert!(c.cmd(&STANDARD.encode(&pw)).starts_with("+OK"), "LOGIN");
    c.cmd("QUIT");
    // A near miss is refused like any wrong password.
    let mut wrong = pw.clone().into_bytes();
    wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).expect("ascii");
    assert!(poplib(&server, JOHN, &wrong).starts_with("error b'-ERR [AUTH]"));

    // SCRAM-SHA-256: the salt is the user's, and both typed forms work.
    for typed in [&pw, &plain_form] {
        let t = scram(&server, JOHN, typed);
        assert!(t.contains("server-final ok"), "{t}");
        assert!(t.contains("\n+OK 1 messages"), "{t}");
    }
    assert!(scram(&server, JOHN, &wrong).contains("\n-ERR [AUTH]"));
    // The main password still logs in everywhere.
    assert!(scram(&server, JOHN, PASSWORD).contains("server-final ok"));
    assert_eq!(poplib(&server, JOHN, PASSWORD), "ok 1");

    let listed = list(&server);
    assert!(listed.contains("Anna's phone"), "{listed}");
    assert!(listed.contains("last used"), "{listed}");
    assert!(listed.contains("127.0.0.1 (SCRAM-SHA-256)"), "{listed}");

    // Through the MTA's SMTP AUTH service.
    assert_eq!(mta_auth(sasl, JOHN, &pw), "OK\t1\tuser=john@example.com");
    assert!(mta_auth(sasl, JOHN, &wrong).starts_with("FAIL\t1"));
    let listed = list(&server);
    assert!(listed.contains("(MTA)"), "{listed}");

    // Audited, never with the password.
    let audit = server.data().sql(
        "SELECT count(*) FROM audit_log WHERE action = 'user.app_password.add' AND actor = 'cli' AND object = 'john@example.com'",
    );
    assert_eq!(audit, "1");
    let leaked = server.data().sql(&format!(
        "SELECT count(*) FROM audit_log WHERE after LIKE '%{plain_form}%' OR after LIKE '%{pw}%'"
    ));
    assert_eq!(leaked, "0");
    assert!(!server.log.lock().expect("log").contains(&plain_form));
    assert!(!server.log.lock().expect("log").contains(&pw));
    // A new main password keeps the user's SCRAM salt: the app password still works over SCRAM.
    let out = server.cli(&["user", "passwd", JOHN, "--password", "another pass"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(scram(&server, JOHN, "another pass").contains("server-final ok"));
    assert!(scram(&server, JOHN, PASSWORD).contains("\n-ERR [AUTH]"));
    let t = scram(&server, JOHN, &pw);
    assert!(t.contains("server-final ok"), "{t}");

    // A second label of the same name is refused; the password is never shown again.
    let again = server.cli(&[
        "user",
        "app-password",
        "add",
        JOHN,
        "--label",
        "Anna's phone",
    ]);
    assert!(!again.status.success());
    assert!(again.stdout.is_empty(), "{}", show(&again));
}

/// Waits for the server to end an open session: the `-ERR` it says why with, then the close.
fn ended(pop: &mut Pop3) -> String {
    let t = Instant::now();
    let line = pop
        .try_line()
        .expect("the server says why it ends the session");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(pop.closed());
    line
}

fn login(server: &Server, password: &str) -> Pop3 {
    let mut c = Pop3::connect(server.pop3);
    assert!(c.cmd(&format!("USER {JOHN}")).starts_with("+OK"));
    let r = c.cmd(&format!("PASS {password}"));
    assert!(r.starts_with("+OK"), "{r}");
    c
}

#[test]
fn revoking_ends_that_devices_session_only() {
    let (server, sasl) = serve();
    let phone = add(&server, "phone");
    let _laptop = add(&server, "laptop");

    // The phone's session survives the laptop's revocation.
    let mut session = login(&server, &phone);
    let out = server.cli(&["user", "app-password", "revoke", JOHN, "--label", "laptop"]);
    assert!(out.status.success(), "{}", show(&out));
    std::thread::sleep(Duration::from_secs(2));
    assert!(session.cmd("NOOP").starts_with("+OK"), "still on");

    // Revoking the phone ends its session, whose DELE is not applied.
    assert!(session.cmd("DELE 1").starts_with("+OK"));
    let out = server.cli(&["user", "app-password", "revoke", JOHN, "--label", "phone"]);
    assert!(out.status.success(), "{}", show(&out));
    let line = ended(&mut session);
    assert!(line.starts_with("-ERR"), "{line}");
    // The phone's password is refused everywhere now, at once (no cached login lingers).
    assert!(poplib(&server, JOHN, &phone).starts_with("error b'-ERR [AUTH]"));
    assert!(plain(&server, JOHN, &phone).starts_with("-ERR [AUTH]"));
    assert!(scram(&server, JOHN, &phone).contains("\n-ERR [AUTH]"));
    assert!(mta_auth(sasl, JOHN, &phone).starts_with("FAIL\t1"));
    assert!(list(&server).contains("has no app passwords"));
    assert_eq!(
        server.data().sql(
            "SELECT count(*) FROM audit_log WHERE action = 'user.app_password.revoke' AND success"
        ),
        "2"
    );

    // A session of the main password is not touched by a revocation.
    let tablet = add(&server, "tablet");
    let mut main = login(&server, PASSWORD);
    assert_eq!(main.stat().0, 1, "the ended session's DELE was not applied");
    let out = server.cli(&["user", "app-password", "revoke", JOHN, "--label", "tablet"]);
    assert!(out.status.success(), "{}", show(&out));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        main.cmd("NOOP").starts_with("+OK"),
        "the main session goes on"
    );
    assert!(main.cmd("QUIT").starts_with("+OK"));
    assert!(poplib(&server, JOHN, &tablet).starts_with("error"));
}

#[test]
fn app_passwords_only_refuses_the_main_password_over_pop3_and_the_mta() {
    let (server, sasl) = serve();
    let pw = add(&server, "phone");
    // Logged in once, so a cached login of the main password exists before the switch.
    assert_eq!(poplib(&server, JOHN, PASSWORD), "ok 1");
    let out = server.cli(&[
        "domain",
        "set",
        "example.com",
        "--app-passwords-only",
        "true",
    ]);
    assert!(out.status.success(), "{}", show(&out));

    assert!(poplib(&server, JOHN, PASSWORD).starts_with("error b'-ERR [AUTH]"));
    assert!(plain(&server, JOHN, PASSWORD).starts_with("-ERR [AUTH]"));
    let main_scram = scram(&server, JOHN, PASSWORD);
    assert!(main_scram.contains("\n-ERR [AUTH]"), "{main_scram}");
    assert!(mta_auth(sasl, JOHN, PASSWORD).starts_with("FAIL\t1"));
    // The app password works on all of them.
    assert_eq!(poplib(&server, JOHN, &pw), "ok 1");
    assert!(scram(&server, JOHN, &pw).contains("server-final ok"));
    assert_eq!(mta_auth(sasl, JOHN, &pw), "OK\t1\tuser=john@example.com");

    let out = server.cli(&[
        "domain",
        "set",
        "example.com",
        "--app-passwords-only",
        "false",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(poplib(&server, JOHN, PASSWORD), "ok 1");
    assert_eq!(
        mta_auth(sasl, JOHN, PASSWORD),
        "OK\t1\tuser=john@example.com"
    );
}

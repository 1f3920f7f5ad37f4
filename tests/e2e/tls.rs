//! TLS: POP3S and STLS with real clients (curl, openssl s_client, Python's poplib and ssl),
//! STARTTLS command injection, certificate choice by SNI with a default, SIGHUP reload, and the
//! self-signed certificate made on first start.

use crate::harness::{self, Data, PASSWORD, Pop3, Server};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "john@example.com";

fn server_with(config: Option<&str>) -> Server {
    let server = match config {
        Some(toml) => Server::start_with_config(toml),
        None => Server::start(),
    };
    server.add_user(USER);
    server
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("run client");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn timeout(program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["60", program]);
    c
}

/// A self-signed certificate for `name` (CN and SAN) made with the openssl CLI.
fn make_cert(dir: &Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.crt")).display().to_string();
    let key = dir.join(format!("{name}.key")).display().to_string();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        &format!("subjectAltName=DNS:{name}"),
        "-keyout",
        &key,
        "-out",
        &cert,
    ]));
    (cert, key)
}

/// The subject and SHA-256 fingerprint of the certificate the server presents, as openssl
/// sees it; `sni` `None` sends no SNI; `starttls` goes through STLS on the plain port.
fn served_cert(addr: SocketAddr, sni: Option<&str>, starttls: bool) -> String {
    let mut args = vec!["s_client".to_string(), "-connect".into(), addr.to_string()];
    match sni {
        Some(name) => args.extend(["-servername".into(), name.into()]),
        None => args.push("-noservername".into()),
    }
    if starttls {
        args.extend(["-starttls".into(), "pop3".into()]);
    }
    let out = run(timeout("openssl").args(&args));
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl x509");
    x509.stdin
        .take()
        .expect("stdin")
        .write_all(&out.stdout)
        .expect("write");
    let out = x509.wait_with_output().expect("x509");
    assert!(out.status.success(), "no certificate served");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs a Python script with `host port user password` as arguments; returns its stdout.
fn python(script: &str, addr: SocketAddr) -> String {
    let out = run(timeout("python3").args([
        "-c",
        script,
        &addr.ip().to_string(),
        &addr.port().to_string(),
        USER,
        PASSWORD,
    ]));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn curl_lists_and_retrieves_over_pop3s_and_stls() {
    let s = server_with(None);
    harness::deliver(&s, USER, &harness::message("over tls"));
    harness::deliver(&s, USER, &harness::message("second"));
    let user = format!("{USER}:{PASSWORD}");
    let list = run(timeout("curl").args([
        "-sS",
        "--insecure",
        "--user",
        &user,
        &format!("pop3s://{}/", s.pop3s),
    ]));
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert_eq!(list.lines().count(), 2, "{list}");
    let retr = run(timeout("curl").args([
        "-sS",
        "--insecure",
        "--user",
        &user,
        &format!("pop3s://{}/1", s.pop3s),
    ]));
    assert!(String::from_utf8_lossy(&retr.stdout).contains("Subject: over tls"));
    // STLS on the plain port; --ssl-reqd fails rather than going on in plain text.
    let list = run(timeout("curl").args([
        "-sS",
        "--insecure",
        "--ssl-reqd",
        "--user",
        &user,
        &format!("pop3://{}/", s.pop3),
    ]));
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 2);
    let retr = run(timeout("curl").args([
        "-sS",
        "--insecure",
        "--ssl-reqd",
        "--user",
        &user,
        &format!("pop3://{}/2", s.pop3),
    ]));
    assert!(String::from_utf8_lossy(&retr.stdout).contains("Subject: second"));
}

#[test]
fn openssl_s_client_starttls_pop3() {
    let s = server_with(None);
    harness::deliver(&s, USER, &harness::message("hello"));
    let mut child = timeout("openssl")
        .args([
            "s_client",
            "-connect",
            &s.pop3.to_string(),
            "-starttls",
            "pop3",
            "-quiet",
            "-crlf",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    // After STLS there is no new greeting: the first thing read in TLS answers our USER.
    for (cmd, expect) in [
        (format!("USER {USER}"), "+OK"),
        (format!("PASS {PASSWORD}"), "+OK 1 messages"),
        ("STAT".to_string(), "+OK 1 "),
        ("QUIT".to_string(), "+OK"),
    ] {
        writeln!(stdin, "{cmd}").expect("write");
        line.clear();
        out.read_line(&mut line).expect("read");
        assert!(line.starts_with(expect), "{cmd}: {line}");
    }
    drop(stdin);
    let _ = child.wait();
}

const POPLIB_STLS: &str = r#"
import poplib, ssl, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3(host, port, timeout=30)
before = p.capa()
p.stls(ctx)
after = p.capa()
try:
    p._shortcmd('STLS')
    again = 'accepted'
except poplib.error_proto as e:
    again = e.args[0].decode()
p.user(user)
p.pass_(pw)
print('before', sorted(before))
print('after', sorted(after))
print('again', again)
print('stat', p.stat())
p.quit()
"#;

#[test]
fn python_poplib_stls_then_login_and_capa_changes() {
    let s = server_with(None);
    harness::deliver(&s, USER, &harness::message("py"));
    let out = python(POPLIB_STLS, s.pop3);
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} missing: {out}"))
            .to_string()
    };
    assert!(line("before").contains("'STLS'"), "{out}");
    assert!(!line("after").contains("'STLS'"), "{out}");
    assert!(line("after").contains("'USER'"), "{out}");
    assert!(line("again").starts_with("again -ERR"), "{out}");
    assert!(line("stat").starts_with("stat (1, "), "{out}");
}

const POP3S_CAPA: &str = r#"
import poplib, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3_SSL(host, port, context=ctx, timeout=30)
print('capa', sorted(p.capa()))
try:
    p._shortcmd('STLS')
    print('stls accepted')
except poplib.error_proto as e:
    print('stls', e.args[0].decode())
p.quit()
"#;

#[test]
fn pop3s_never_offers_stls_and_stls_is_refused_after_login() {
    let s = server_with(None);
    let out = python(POP3S_CAPA, s.pop3s);
    assert!(out.contains("'USER'") && !out.contains("'STLS'"), "{out}");
    assert!(out.contains("stls -ERR"), "{out}");
    // In TRANSACTION STLS is refused and the session goes on.
    let mut c = Pop3::login(s.pop3, USER);
    assert!(c.cmd("STLS").starts_with("-ERR"));
    assert!(c.cmd("NOOP").starts_with("+OK"));
}

/// Sends STLS and CAPA in one write, then does the handshake on the raw socket: the first reply
/// read over TLS must answer our NOOP, not the CAPA injected before the handshake.
const INJECTION: &str = r#"
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=30)
def line(read):
    buf = b''
    while not buf.endswith(b'\r\n'):
        c = read(1)
        if not c:
            break
        buf += c
    return buf.decode()
print('greeting', line(s.recv).strip())
s.sendall(b'STLS\r\nCAPA\r\n')
print('stls', line(s.recv).strip())
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname='localhost')
t.sendall(b'USER x\r\n')
print('first', line(t.recv).strip())
t.sendall(b'QUIT\r\n')
print('quit', line(t.recv).strip())
"#;

#[test]
fn stls_discards_commands_sent_before_the_handshake() {
    let s = server_with(None);
    let out = python(INJECTION, s.pop3);
    assert!(out.contains("stls +OK Begin TLS negotiation"), "{out}");
    let first = out
        .lines()
        .find(|l| l.starts_with("first"))
        .unwrap_or_default();
    assert_eq!(
        first, "first +OK send PASS",
        "injected CAPA answered in TLS: {out}"
    );
    assert!(out.contains("quit +OK"), "{out}");
}

#[test]
fn sni_chooses_the_certificate_and_clients_without_sni_get_the_default() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dc, dk) = make_cert(tmp.path(), "default.example");
    let (ac, ak) = make_cert(tmp.path(), "a.example");
    let (bc, bk) = make_cert(tmp.path(), "b.example");
    let s = server_with(Some(&format!(
        "[tls]\ncert = \"{dc}\"\nkey = \"{dk}\"\n\
         [[tls.sni]]\nname = \"a.example\"\ncert = \"{ac}\"\nkey = \"{ak}\"\n\
         [[tls.sni]]\nname = \"b.example\"\ncert = \"{bc}\"\nkey = \"{bk}\"\n"
    )));
    assert!(served_cert(s.pop3s, Some("a.example"), false).contains("CN = a.example"));
    assert!(served_cert(s.pop3s, Some("B.Example"), false).contains("CN = b.example"));
    assert!(served_cert(s.pop3s, None, false).contains("CN = default.example"));
    assert!(served_cert(s.pop3s, Some("other.example"), false).contains("CN = default.example"));
    assert!(served_cert(s.pop3, Some("b.example"), true).contains("CN = b.example"));
    assert!(served_cert(s.pop3, None, true).contains("CN = default.example"));
}

/// Logs in over POP3S, says "ready", then answers one STAT per line read on stdin.
const HELD_SESSION: &str = r#"
import poplib, ssl, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3_SSL(host, port, context=ctx, timeout=30)
p.user(user)
p.pass_(pw)
print('ready', flush=True)
for _ in sys.stdin:
    print('stat', p.stat(), flush=True)
p.quit()
"#;

fn wait_for_log(s: &Server, needle: &str, count: usize) {
    let start = Instant::now();
    while s.log.lock().expect("log").matches(needle).count() < count {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {needle:?} in log:\n{}",
            s.log.lock().expect("log")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reloads_certificates_and_keeps_sessions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (cert, key) = make_cert(tmp.path(), "first.example");
    let s = server_with(Some(&format!(
        "[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
    )));
    harness::deliver(&s, USER, &harness::message("held"));
    assert!(served_cert(s.pop3s, None, false).contains("CN = first.example"));

    let mut held = timeout("python3")
        .args([
            "-c",
            HELD_SESSION,
            &s.pop3s.ip().to_string(),
            &s.pop3s.port().to_string(),
            USER,
            PASSWORD,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut to_held = held.stdin.take().expect("stdin");
    let mut from_held = BufReader::new(held.stdout.take().expect("stdout"));
    let mut line = String::new();
    from_held.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "ready");

    // New files in place of the old, then SIGHUP.
    let (new_cert, new_key) = make_cert(tmp.path(), "second.example");
    std::fs::rename(&new_key, &key).expect("rename key");
    std::fs::rename(&new_cert, &cert).expect("rename cert");
    harness::signal(s.pid(), "HUP");
    wait_for_log(&s, "TLS certificates reloaded", 1);
    assert!(served_cert(s.pop3s, None, false).contains("CN = second.example"));

    // A broken file on reload keeps the certificates in use and names the file.
    std::fs::write(&cert, "not a certificate").expect("write");
    harness::signal(s.pid(), "HUP");
    wait_for_log(&s, "TLS certificates not reloaded", 1);
    assert!(
        s.log
            .lock()
            .expect("log")
            .contains(&format!("tls.cert: {cert}"))
    );
    assert!(served_cert(s.pop3s, None, false).contains("CN = second.example"));

    // The session from before the reloads still works.
    writeln!(to_held, "go").expect("write");
    line.clear();
    from_held.read_line(&mut line).expect("read");
    assert!(line.starts_with("stat (1, "), "{line}");
    drop(to_held);
    assert!(held.wait().expect("wait").success());
}

#[test]
fn self_signed_certificate_is_made_on_first_start_and_reused() {
    let s = Server::start();
    let dir = s.data().dir.join("tls");
    let first = served_cert(s.pop3s, Some("localhost"), false);
    assert!(first.contains("sha256 Fingerprint="), "{first}");
    assert!(
        s.log
            .lock()
            .expect("log")
            .contains("generated a self-signed certificate")
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("key.pem"))
            .expect("key.pem")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(dir.join("cert.pem").exists());
    }
    let (_, data) = s.terminate();
    let s = Server::restart(data);
    assert_eq!(served_cert(s.pop3s, Some("localhost"), false), first);
    assert!(
        !s.log
            .lock()
            .expect("log")
            .contains("generated a self-signed certificate")
    );
}

#[test]
fn a_missing_certificate_file_stops_start_naming_the_key() {
    let data = Data::new().with_config(
        "[pop3s]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
    );
    let out = timeout(harness::BIN)
        .args(["--data-dir"])
        .arg(&data.dir)
        .args(["--config"])
        .arg(data.dir.join("pophost.toml"))
        .args([
            "serve",
            "--pop3-listen",
            "127.0.0.1:0",
            "--lmtp-listen",
            "127.0.0.1:0",
        ])
        .env_remove("POPHOST_CONFIG")
        .envs(
            data.database_url
                .iter()
                .map(|u| ("POPHOST_DATABASE_URL", u.as_str())),
        )
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.cert: cannot read /nonexistent/c.pem"),
        "{err}"
    );
}

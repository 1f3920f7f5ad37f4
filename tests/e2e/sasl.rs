//! SASL `AUTH` (RFC 5034) over raw sockets and from curl: PLAIN (RFC 4616), LOGIN, and
//! SCRAM-SHA-256 (RFC 7677) with the client side written in Python (hashlib/hmac), so pophost
//! is checked against an independent implementation.

use std::process::{Command, Output, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::harness::{PASSWORD, Pop3, Server, deliver, message};

const USER: &str = "john@example.com";

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn server() -> Server {
    let server = Server::start();
    server.add_user(USER);
    server.add_user("mary@example.com");
    deliver(&server, USER, &message("hello"));
    server
}

fn plain(authzid: &str, user: &str, password: &str) -> String {
    b64(format!("{authzid}\0{user}\0{password}").as_bytes())
}

fn logged_in(c: &mut Pop3, reply: &str) {
    assert!(reply.starts_with("+OK 1 messages"), "{reply}");
    assert_eq!(c.stat().0, 1);
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn plain_with_initial_response() {
    let server = server();
    let mut c = Pop3::connect(server.pop3);
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", USER, PASSWORD)));
    logged_in(&mut c, &r);
    // authzid equal to the login is fine too.
    let mut c = Pop3::connect(server.pop3);
    let r = c.cmd(&format!("auth plain {}", plain(USER, USER, PASSWORD)));
    logged_in(&mut c, &r);
}

#[test]
fn plain_without_initial_response() {
    let server = server();
    let mut c = Pop3::connect(server.pop3);
    // An empty challenge is `+ ` with nothing after it, never +OK.
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    let r = c.cmd(&plain("", USER, PASSWORD));
    logged_in(&mut c, &r);
}

#[test]
fn plain_empty_initial_response_and_wrong_password() {
    let server = server();
    let mut c = Pop3::connect(server.pop3);
    // `=` is an empty initial response: not a PLAIN message.
    let r = c.cmd("AUTH PLAIN =");
    assert!(r.starts_with("-ERR"), "{r}");
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", USER, "wrong")));
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        plain("", "nobody@example.com", PASSWORD)
    ));
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    // The session goes on.
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", USER, PASSWORD)));
    logged_in(&mut c, &r);
}

#[test]
fn plain_with_another_users_authzid_is_refused() {
    let server = server();
    let mut c = Pop3::connect(server.pop3);
    // Mary's correct password, asking to act as John.
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        plain(USER, "mary@example.com", PASSWORD)
    ));
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    assert!(c.cmd("STAT").starts_with("-ERR"));
}

#[test]
fn login_mechanism() {
    let server = server();
    let mut c = Pop3::connect(server.pop3);
    assert_eq!(c.cmd("AUTH LOGIN"), format!("+ {}", b64(b"Username:")));
    assert_eq!(
        c.cmd(&b64(USER.as_bytes())),
        format!("+ {}", b64(b"Password:"))
    );
    let r = c.cmd(&b64(PASSWORD.as_bytes()));
    logged_in(&mut c, &r);
    // The user name as an initial response.
    let mut c = Pop3::connect(server.pop3);
    let r = c.cmd(&format!("AUTH LOGIN {}", b64(USER.as_bytes())));
    assert_eq!(r, format!("+ {}", b64(b"Password:")));
    let r = c.cmd(&b64(b"wrong"));
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
}

#[test]
fn bare_auth_lists_mechanisms_and_the_session_goes_on() {
    let server = server();
    let mut c = Pop3::connect(server.pop3);
    for line in ["AUTH", "AUTH "] {
        let r = c.cmd(line);
        assert!(r.starts_with("+OK"), "{r}");
        assert_eq!(c.multi(), ["PLAIN", "LOGIN", "SCRAM-SHA-256"]);
    }
    assert!(c.cmd("CAPA").starts_with("+OK"));
    let capa = c.multi();
    assert!(
        capa.contains(&"SASL PLAIN LOGIN SCRAM-SHA-256".to_string()),
        "{capa:?}"
    );
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", USER, PASSWORD)));
    assert!(r.starts_with("+OK"), "{r}");
    // The same SASL line after login; AUTH itself is refused then.
    assert!(c.cmd("CAPA").starts_with("+OK"));
    assert_eq!(c.multi(), capa);
    assert!(c.cmd("AUTH PLAIN").starts_with("-ERR"));
}

#[test]
fn cancel_bad_base64_and_unknown_mechanism() {
    let server = server();
    let mut c = Pop3::connect(server.pop3);
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    let r = c.cmd("*");
    assert!(r.starts_with("-ERR"), "{r}");
    assert_eq!(c.cmd("AUTH LOGIN"), format!("+ {}", b64(b"Username:")));
    let r = c.cmd("not base64!");
    assert!(r.starts_with("-ERR"), "{r}");
    let r = c.cmd("AUTH PLAIN not-base64!");
    assert!(r.starts_with("-ERR"), "{r}");
    let r = c.cmd("AUTH CRAM-MD5");
    assert!(r.starts_with("-ERR"), "{r}");
    let r = c.cmd("AUTH GSSAPI =");
    assert!(r.starts_with("-ERR"), "{r}");
    // After all that, still in AUTHORIZATION and talking.
    assert!(!c.capa().is_empty());
    // A response line longer than a command line (here 600 octets) is read whole.
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    let long = plain("", USER, &"x".repeat(440));
    assert!(long.len() > 255);
    let r = c.cmd(&long);
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    let r = c.cmd(&format!("USER {USER}"));
    assert!(r.starts_with("+OK"), "{r}");
    let r = c.cmd(&format!("PASS {PASSWORD}"));
    logged_in(&mut c, &r);
}

/// The SCRAM-SHA-256 client side (RFC 5802/7677) in Python. Prints every reply line.
const SCRAM_CLIENT: &str = r#"
import base64, hashlib, hmac, os, socket, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port)); f = s.makefile('rb')
def line(): return f.readline().decode().rstrip('\r\n')
def send(x): s.sendall(x.encode() + b'\r\n')
line()
cnonce = base64.b64encode(os.urandom(18)).decode()
bare = 'n=' + user.replace('=', '=3D').replace(',', '=2C') + ',r=' + cnonce
send('AUTH SCRAM-SHA-256')
print(line())
send(base64.b64encode(('n,,' + bare).encode()).decode())
r = line(); print(r)
if not r.startswith('+ '): sys.exit(0)
sf = base64.b64decode(r[2:]).decode()
print('server-first', sf)
a = dict(kv.split('=', 1) for kv in sf.split(','))
assert a['r'].startswith(cnonce) and len(a['r']) > len(cnonce)
salted = hashlib.pbkdf2_hmac('sha256', pw.encode(), base64.b64decode(a['s']), int(a['i']))
ck = hmac.new(salted, b'Client Key', 'sha256').digest()
sk = hashlib.sha256(ck).digest()
wp = 'c=biws,r=' + a['r']
am = bare + ',' + sf + ',' + wp
sig = hmac.new(sk, am.encode(), 'sha256').digest()
final = wp + ',p=' + base64.b64encode(bytes(x ^ y for x, y in zip(ck, sig))).decode()
send(base64.b64encode(final.encode()).decode())
r = line(); print(r)
if not r.startswith('+ '): sys.exit(0)
srv = hmac.new(salted, b'Server Key', 'sha256').digest()
want = 'v=' + base64.b64encode(hmac.new(srv, am.encode(), 'sha256').digest()).decode()
print('server-final ' + ('ok' if base64.b64decode(r[2:]).decode() == want else 'BAD'))
send('')
print(line())
send('STAT'); print(line())
send('QUIT'); print(line())
"#;

pub(crate) fn scram(server: &Server, user: &str, password: &str) -> String {
    let out: Output = Command::new("timeout")
        .args(["60", "python3", "-c", SCRAM_CLIENT])
        .arg(server.pop3.ip().to_string())
        .arg(server.pop3.port().to_string())
        .args([user, password])
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The `s=` and `i=` of the server-first message in a transcript.
fn salt_and_iterations(transcript: &str) -> String {
    let sf = transcript
        .lines()
        .find_map(|l| l.strip_prefix("server-first "))
        .unwrap_or_else(|| panic!("no server-first in {transcript}"));
    sf.split(',').skip(1).collect::<Vec<_>>().join(",")
}

#[test]
fn scram_sha_256_with_a_cli_made_user() {
    let server = server();
    let ok = scram(&server, USER, PASSWORD);
    assert!(ok.contains("server-final ok"), "{ok}");
    assert!(ok.contains("\n+OK 1 messages"), "{ok}");
    assert!(ok.contains("\n+OK 1 "), "STAT: {ok}");
    assert!(salt_and_iterations(&ok).ends_with(",i=4096"), "{ok}");

    let bad = scram(&server, USER, "wrong");
    assert!(bad.contains("\n-ERR [AUTH]"), "{bad}");
    assert!(!bad.contains("server-final"), "{bad}");
    // An unknown user looks the same up to client-final: a stable salt, the same iterations.
    let a = scram(&server, "nobody@example.com", PASSWORD);
    let b = scram(&server, "nobody@example.com", PASSWORD);
    assert!(a.contains("\n-ERR [AUTH]"), "{a}");
    assert_eq!(salt_and_iterations(&a), salt_and_iterations(&b));
    assert!(salt_and_iterations(&a).ends_with(",i=4096"), "{a}");

    // `user passwd` derives a new verifier: the old password stops working for SCRAM too.
    let out = server.cli(&["user", "passwd", USER, "--password", "new pass"]);
    assert!(out.status.success(), "{out:?}");
    assert!(scram(&server, USER, PASSWORD).contains("\n-ERR [AUTH]"));
    assert!(scram(&server, USER, "new pass").contains("server-final ok"));
}

#[test]
fn user_without_verifier_fails_scram_but_plain_works() {
    let server = server();
    server
        .data()
        .sql("UPDATE users SET scram_verifier = NULL WHERE localpart = 'john'");
    let r = scram(&server, USER, PASSWORD);
    assert!(r.contains("server-first "), "{r}");
    assert!(r.contains("\n-ERR [AUTH]"), "{r}");
    let mut c = Pop3::connect(server.pop3);
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("", USER, PASSWORD)));
    logged_in(&mut c, &r);
}

fn curl(server: &Server, mechanism: &str, password: &str) -> Output {
    let home = tempfile::tempdir().expect("tempdir");
    Command::new("timeout")
        .args(["60", "curl", "-sS", "-v", "--user"])
        .arg(format!("{USER}:{password}"))
        .args(["--login-options", &format!("AUTH={mechanism}")])
        .arg(format!("pop3://{}/", server.pop3))
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

#[test]
fn curl_plain_and_login() {
    let server = server();
    for mechanism in ["PLAIN", "LOGIN"] {
        let out = curl(&server, mechanism, PASSWORD);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mechanism}: {err}");
        assert!(err.contains(&format!("AUTH {mechanism}")), "{err}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("1 "), "{mechanism}: {stdout}\n{err}");
        let out = curl(&server, mechanism, "wrong");
        assert!(!out.status.success(), "{mechanism} with a wrong password");
    }
}

/// RFC 5034 §4: a response line may be longer than a command line (up to 1,024 octets here),
/// whether the client waits for the `+` challenge or sends the response in the same write as
/// `AUTH PLAIN` (one limit, whatever the timing).
#[test]
fn a_long_response_is_taken_with_or_without_waiting_for_the_challenge() {
    let server = Server::start();
    // A password long enough that the PLAIN response (~700 octets) is far over 255.
    let password = "correct horse battery staple ".repeat(17);
    let _ = server.cli(&["domain", "add", "example.com"]);
    let out = server.cli(&["user", "add", USER, "--password", &password]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deliver(&server, USER, &message("hello"));
    let response = plain("", USER, &password);
    assert!(response.len() > 600 && response.len() + 2 <= 1024);

    let mut waits = Pop3::connect(server.pop3);
    assert_eq!(waits.cmd("AUTH PLAIN"), "+ ");
    let r = waits.cmd(&response);
    logged_in(&mut waits, &r);

    let mut pipelines = Pop3::connect(server.pop3);
    pipelines.send_raw(format!("AUTH PLAIN\r\n{response}\r\n").as_bytes());
    assert_eq!(pipelines.line(), "+ ");
    let r = pipelines.line();
    logged_in(&mut pipelines, &r);

    // Past 1,024 octets the exchange ends with -ERR, both ways, and the session goes on.
    let too_long = "A".repeat(1100);
    let mut c = Pop3::connect(server.pop3);
    c.send_raw(format!("AUTH PLAIN\r\n{too_long}\r\n").as_bytes());
    assert_eq!(c.line(), "+ ");
    assert!(c.line().starts_with("-ERR"));
    assert!(!c.capa().is_empty());
}

//! OAuth 2.0 (issue 22, item 3) end to end, on SQLite or Postgres (`POPHOST_TEST_BACKEND`): a
//! domain's identity provider set with `pophost domain oauth`, its JWKS served over HTTP by the
//! test (with `Cache-Control`), tokens signed by the test (RSA from `openssl genpkey`, ES256 and
//! Ed25519 from ring); Python's `poplib` logs in with XOAUTH2 as Thunderbird does (`AUTH
//! XOAUTH2`, then the message after `+ `) and with OAUTHBEARER; a refused token gets the RFC 7628
//! error JSON as a challenge; the MTA's SMTP AUTH service takes a token too.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use tenancy::oauth::testing::{self, TestKey};

use crate::harness::{Data, Pop3, Server, deliver, free_port, message, show};

pub(crate) const ISSUER: &str = "https://id.example.com";
pub(crate) const AUDIENCE: &str = "pophost-mail";
const JOHN: &str = "john@example.com";

/// A JWKS endpoint on loopback: every GET gets `body` with `Cache-Control: max-age=600`.
pub(crate) struct JwksServer {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
}

impl JwksServer {
    pub(crate) fn start(body: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Cache-Control: public, max-age=600\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        JwksServer { url, hits }
    }
}

/// Sets example.com's identity provider with the CLI.
pub(crate) fn set_oauth(server: &Server, jwks_url: &str) {
    let out = server.cli(&[
        "domain",
        "oauth",
        "set",
        "example.com",
        "--issuer",
        ISSUER,
        "--jwks-url",
        jwks_url,
        "--audience",
        AUDIENCE,
    ]);
    assert!(out.status.success(), "{}", show(&out));
}

pub(crate) fn token_for(key: &TestKey, email: &str) -> String {
    key.sign(&testing::claims(ISSUER, AUDIENCE, email))
}

/// Python's poplib as Thunderbird speaks XOAUTH2 (and OAUTHBEARER): `AUTH MECH`, then the
/// base64 message after the `+ `; on a refusal, the decoded error challenge and the reply to the
/// dummy answer. Prints one line per step.
const POPLIB_BEARER: &str = r#"
import base64, poplib, sys
host, port, mech, message = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
p = poplib.POP3(host, port, timeout=30)
print(p._shortcmd('AUTH ' + mech).decode())
try:
    r = p._shortcmd(base64.b64encode(message.encode()).decode())
    print(r.decode())
    print('stat', p.stat()[0])
    print('retr', b'\r\n'.join(p.retr(1)[1]).decode().count('Subject'))
    p.quit()
except poplib.error_proto as e:
    print('error', e)
else:
    sys.exit(0)
"#;

/// Like `POPLIB_BEARER`, for a refused token: the challenge's JSON, then the final reply to the
/// dummy answer (`AQ==` for OAUTHBEARER, empty for XOAUTH2).
const POPLIB_REFUSED: &str = r#"
import base64, poplib, sys
host, port, mech, message = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
p = poplib.POP3(host, port, timeout=30)
p._shortcmd('AUTH ' + mech)
p._putcmd(base64.b64encode(message.encode()).decode())
r = p._getline()[0].decode()
assert r.startswith('+ '), r
print('challenge', base64.b64decode(r[2:]).decode())
p._putcmd('AQ==' if mech == 'OAUTHBEARER' else '')
print('final', p._getline()[0].decode())
p._putcmd('CAPA')
print('then', p._getline()[0].decode())
"#;

fn python(server: &Server, script: &str, mech: &str, message: &[u8]) -> String {
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", script])
        .arg(server.pop3.ip().to_string())
        .arg(server.pop3.port().to_string())
        .arg(mech)
        .arg(String::from_utf8_lossy(message).as_ref())
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// One SMTP AUTH bearer login through the MTA's auth service, as Postfix relays it: the
/// `MECH` lines of the handshake and the service's answer.
pub(crate) fn mta_bearer(sasl: SocketAddr, mech: &str, message: &[u8]) -> (Vec<String>, String) {
    let stream = TcpStream::connect(sasl).expect("connect to the SMTP AUTH service");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    w.write_all(b"VERSION\t1\t2\nCPID\t4242\n")
        .expect("handshake");
    let mut mechs = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("greeting");
        assert!(!line.is_empty(), "the service hung up");
        if line.trim_end() == "DONE" {
            break;
        }
        if let Some(m) = line.strip_prefix("MECH\t") {
            mechs.push(m.split('\t').next().unwrap_or("").to_string());
        }
    }
    let resp = STANDARD.encode(message);
    w.write_all(
        format!(
            "AUTH\t1\t{mech}\tservice=smtp\tlip=127.0.0.1\trip=127.0.0.1\tsecured\tresp={resp}\n"
        )
        .as_bytes(),
    )
    .expect("auth");
    line.clear();
    r.read_line(&mut line).expect("answer");
    (mechs, line.trim_end().to_string())
}

fn sasl_line(server: &Server) -> String {
    let mut c = Pop3::connect(server.pop3);
    let capa = c.capa();
    c.cmd("QUIT");
    capa.into_iter()
        .find(|l| l.starts_with("SASL "))
        .unwrap_or_default()
}

#[test]
fn bearer_tokens_log_in_over_pop3_and_the_mta_and_bad_ones_get_the_error_json() {
    let sasl: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let server = Server::spawn(Data::new(), &["--sasl-listen", &sasl.to_string()]);
    server.add_user(JOHN);
    server.add_user("mary@example.com");
    deliver(&server, JOHN, &message("hello"));
    let (rsa, ec, ed) = (
        TestKey::rsa("rsa-1"),
        TestKey::ec("ec-1"),
        TestKey::ed("ed-1"),
    );
    let jwks = JwksServer::start(testing::jwks(&[&rsa, &ec, &ed]));

    // Nothing configured: neither POP3 nor the MTA offers the bearer mechanisms, nor takes them.
    assert!(!sasl_line(&server).contains("XOAUTH2"));
    let (mechs, _) = mta_bearer(sasl, "PLAIN", b"\0x\0y");
    assert_eq!(mechs, ["PLAIN", "LOGIN"]);
    let mut c = Pop3::connect(server.pop3);
    assert!(
        c.cmd("AUTH XOAUTH2").starts_with("-ERR"),
        "not offered, not taken"
    );
    c.cmd("QUIT");

    set_oauth(&server, &jwks.url);
    let shown = server.cli(&["domain", "oauth", "show", "example.com"]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(shown.contains(&format!("jwks-url {}", jwks.url)), "{shown}");
    assert!(
        shown.contains("claim email") && shown.contains("RS256,ES256,EdDSA"),
        "{shown}"
    );
    assert!(
        sasl_line(&server).ends_with("OAUTHBEARER XOAUTH2"),
        "{}",
        sasl_line(&server)
    );

    // Thunderbird's XOAUTH2 with an RS256 token, then OAUTHBEARER with ES256 and EdDSA tokens.
    let rs = token_for(&rsa, JOHN);
    let out = python(
        &server,
        POPLIB_BEARER,
        "XOAUTH2",
        &testing::xoauth2(JOHN, &rs),
    );
    assert!(out.starts_with("+ \n+OK"), "{out}");
    assert!(out.contains("stat 1\nretr 1"), "{out}");
    for key in [&ec, &ed] {
        let token = token_for(key, "John@Example.com");
        let out = python(
            &server,
            POPLIB_BEARER,
            "OAUTHBEARER",
            &testing::oauthbearer(JOHN, &token),
        );
        assert!(out.contains("stat 1"), "{out}");
    }
    // One fetch served them all (max-age=600).
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);

    // Refusals: expired, another audience, another mailbox's token, a key the JWKS lacks,
    // `alg: none`. Each gets the error JSON as a challenge, then -ERR [AUTH].
    let mut claims = testing::claims(ISSUER, AUDIENCE, JOHN);
    claims["exp"] = json!(testing::now() - 3600);
    let expired = rsa.sign(&claims);
    let mut claims = testing::claims(ISSUER, "someone-else", JOHN);
    claims["iss"] = json!(ISSUER);
    let wrong_audience = ec.sign(&claims);
    let marys = token_for(&ed, "mary@example.com");
    let unknown_key = token_for(&TestKey::ec("ec-2"), JOHN);
    let unsigned = testing::unsigned(&testing::claims(ISSUER, AUDIENCE, JOHN));
    for (what, token) in [
        ("expired", &expired),
        ("wrong audience", &wrong_audience),
        ("another mailbox", &marys),
        ("unknown kid", &unknown_key),
        ("alg none", &unsigned),
    ] {
        let out = python(
            &server,
            POPLIB_REFUSED,
            "OAUTHBEARER",
            &testing::oauthbearer(JOHN, token),
        );
        assert!(
            out.contains(r#"challenge {"status":"invalid_token","schemes":"bearer"}"#),
            "{what}: {out}"
        );
        assert!(out.contains("final -ERR [AUTH]"), "{what}: {out}");
        assert!(out.contains("then +OK"), "the session goes on: {out}");
    }
    let out = python(
        &server,
        POPLIB_REFUSED,
        "XOAUTH2",
        &testing::xoauth2(JOHN, &expired),
    );
    assert!(
        out.contains(r#"challenge {"status":"401","schemes":"bearer"}"#),
        "{out}"
    );
    assert!(out.contains("final -ERR [AUTH]"), "{out}");
    // An unknown kid within `REFETCH_EVERY` (30 s) of the fetch fetches nothing: made-up kids
    // cannot make pophost hammer the provider (the refetch itself: tenancy's unit tests).
    assert_eq!(jwks.hits.load(Ordering::SeqCst), 1);

    // Through the MTA's SMTP AUTH service.
    let (mechs, answer) = mta_bearer(sasl, "OAUTHBEARER", &testing::oauthbearer(JOHN, &rs));
    assert_eq!(mechs, ["PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]);
    assert_eq!(answer, "OK\t1\tuser=john@example.com");
    let (_, answer) = mta_bearer(sasl, "XOAUTH2", &testing::xoauth2(JOHN, &rs));
    assert_eq!(answer, "OK\t1\tuser=john@example.com");
    let (_, answer) = mta_bearer(sasl, "XOAUTH2", &testing::xoauth2("mary@example.com", &rs));
    assert!(answer.starts_with("CONT\t1\t"), "{answer}");

    // Failed bearer logins are in the user's login history; no token is ever logged.
    let recorded = server.data().sql(
        "SELECT count(*) FROM login_events WHERE reason = 'bad_token' AND mechanism = 'OAUTHBEARER'",
    );
    assert_eq!(recorded, "5", "one per refused OAUTHBEARER token");
    let succeeded = server
        .data()
        .sql("SELECT count(*) FROM login_events WHERE success AND mechanism = 'XOAUTH2'");
    assert_eq!(succeeded, "1");
    let log = server.log.lock().expect("log").clone();
    assert!(
        !log.contains(&rs[..40]) && !log.contains(&expired[..40]),
        "a token in the log"
    );

    // Cleared: neither listed nor taken.
    let out = server.cli(&["domain", "oauth", "clear", "example.com"]);
    assert!(out.status.success(), "{}", show(&out));
    let audited = server.data().sql(
        "SELECT count(*) FROM audit_log WHERE actor = 'cli' AND object = 'example.com' \
         AND action IN ('domain.oauth.set', 'domain.oauth.clear')",
    );
    assert_eq!(audited, "2", "set and clear, by the command line");
    assert!(!sasl_line(&server).contains("OAUTHBEARER"));
    let (mechs, _) = mta_bearer(sasl, "PLAIN", b"\0x\0y");
    assert_eq!(mechs, ["PLAIN", "LOGIN"]);
}

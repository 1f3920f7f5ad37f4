//! CAPA stays honest (issue 22, item 5), on SQLite or Postgres (`POPHOST_TEST_BACKEND`): for
//! each way in (plain POP3 from loopback, after STLS, POP3S, and plain POP3 from a non-loopback
//! address where cleartext passwords are not allowed), with and without a domain that has OAuth,
//! Python's poplib reads CAPA and then uses every capability listed — a real login with valid
//! credentials for each SASL mechanism, USER, STLS, APOP (when the greeting offers it), UTF8 and
//! LANG, TOP and UIDL — and every one must work. A capability the client does not know how to
//! check fails the test too, so none can be added without being tried here.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};

use tenancy::oauth::testing::{self, TestKey};

use crate::harness::{Data, PASSWORD, Server, deliver, message, show};
use crate::oauth::{JwksServer, set_oauth, token_for};

const JOHN: &str = "john@example.com";

/// Reads CAPA on one connection, then tries each capability on a connection of its own. Prints
/// `CAPA <json>` and `RESULTS <json>` (capability -> "ok" or why not).
const CLIENT: &str = r#"
import base64, hashlib, hmac, json, os, poplib, socket, ssl, sys
host, port, mode, source, user, pw, bearer, xoauth2 = sys.argv[1:9]
port = int(port)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
b64 = lambda b: base64.b64encode(b if isinstance(b, bytes) else b.encode()).decode()

class FromSource(poplib.POP3):
    """Connects from `source` (a non-loopback address of this machine) when given."""
    def _create_socket(self, timeout):
        addr = (source, 0) if source != '-' else None
        return socket.create_connection((self.host, self.port), timeout, addr)

def connect():
    if mode == 'pop3s':
        return poplib.POP3_SSL(host, port, context=ctx, timeout=30)
    p = FromSource(host, port, timeout=30)
    if mode == 'stls':
        p.stls(context=ctx)
    return p

def stat(p):
    assert p.stat()[0] == 1

def userpass(p):
    p.user(user); p.pass_(pw); stat(p)

def sasl(p, mech, *responses):
    r = p._shortcmd('AUTH ' + mech)
    for resp in responses:
        assert r.startswith(b'+'), r
        r = p._shortcmd(resp)
    assert r.startswith(b'+OK'), r
    stat(p)

def scram(p):
    cnonce = b64(os.urandom(18))
    bare = 'n=' + user + ',r=' + cnonce
    p._putcmd('AUTH SCRAM-SHA-256')
    assert p._getline()[0].startswith(b'+')
    p._putcmd(b64('n,,' + bare))
    r = p._getline()[0].decode(); assert r.startswith('+ '), r
    sf = base64.b64decode(r[2:]).decode()
    a = dict(kv.split('=', 1) for kv in sf.split(','))
    salted = hashlib.pbkdf2_hmac('sha256', pw.encode(), base64.b64decode(a['s']), int(a['i']))
    ck = hmac.new(salted, b'Client Key', 'sha256').digest()
    wp = 'c=biws,r=' + a['r']
    am = bare + ',' + sf + ',' + wp
    sig = hmac.new(hashlib.sha256(ck).digest(), am.encode(), 'sha256').digest()
    p._putcmd(b64(wp + ',p=' + b64(bytes(x ^ y for x, y in zip(ck, sig)))))
    r = p._getline()[0].decode(); assert r.startswith('+ '), r
    p._putcmd('')
    r = p._getline()[0]; assert r.startswith(b'+OK'), r
    stat(p)

def login(p):
    # USER/PASS where offered, else the mechanism that needs no cleartext password.
    (userpass if 'USER' in caps else scram)(p)

def lang(p):
    assert p._longcmd('LANG')[0].startswith(b'+OK')
    login(p)

def utf8(p):
    assert p._shortcmd('UTF8').startswith(b'+OK')
    login(p)

def apop(p):
    p.apop(user, pw); stat(p)

def stls_cap(p):
    # `connect` did STLS already in 'stls' mode; here, on a plain connection, it is the test.
    p.stls(context=ctx); userpass(p)

def top(p):
    login(p); assert p.top(1, 0)[0].startswith(b'+OK')

def uidl(p):
    login(p); assert p.uidl()[0].startswith(b'+OK')

checks = {
    'USER': userpass, 'STLS': stls_cap, 'UTF8': utf8, 'LANG': lang, 'TOP': top, 'UIDL': uidl,
    'PLAIN': lambda p: sasl(p, 'PLAIN', b64('\0' + user + '\0' + pw)),
    'LOGIN': lambda p: sasl(p, 'LOGIN', b64(user), b64(pw)),
    'SCRAM-SHA-256': scram,
    'OAUTHBEARER': lambda p: sasl(p, 'OAUTHBEARER', bearer),
    'XOAUTH2': lambda p: sasl(p, 'XOAUTH2', xoauth2),
}
# What CAPA says without a command to try: response codes, pipelining, the server's name, and
# the domain's retention policy.
informational = {'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING', 'IMPLEMENTATION', 'EXPIRE',
                 'LOGIN-DELAY'}

p = connect()
welcome = p.welcome.decode()
caps = p.capa()
p.quit()
print('CAPA', json.dumps(caps))
todo = []
for name, args in caps.items():
    if name == 'SASL':
        todo += args
    elif name not in informational:
        todo.append(name)
if '<' in welcome:
    todo.append('APOP')
checks['APOP'] = apop
results = {}
for name in todo:
    check = checks.get(name)
    if check is None:
        results[name] = 'not checked: unknown capability'
        continue
    try:
        p = connect()
        check(p)
        results[name] = 'ok'
        p.quit()
    except Exception as e:
        results[name] = 'failed: %r' % (e,)
print('RESULTS', json.dumps(results))
"#;

/// The capabilities listed and what trying each gave.
struct Tried {
    capa: serde_json::Value,
    results: serde_json::Map<String, serde_json::Value>,
}

impl Tried {
    fn sasl(&self) -> Vec<String> {
        self.capa["SASL"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every capability tried worked.
    fn all_work(&self, what: &str) {
        assert!(!self.results.is_empty(), "{what}: nothing tried");
        for (name, result) in &self.results {
            assert_eq!(result, "ok", "{what}: {name} is listed but does not work");
        }
    }
}

fn try_all(addr: SocketAddr, mode: &str, source: Option<IpAddr>, key: &TestKey) -> Tried {
    let token = token_for(key, JOHN);
    let bearer = String::from_utf8(testing::oauthbearer(JOHN, &token)).expect("utf-8");
    let xoauth2 = String::from_utf8(testing::xoauth2(JOHN, &token)).expect("utf-8");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let out = Command::new("timeout")
        .args(["120", "python3", "-c", CLIENT])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(mode)
        .arg(source.map_or("-".to_string(), |s| s.to_string()))
        .args([JOHN, PASSWORD, &b64(&bearer), &b64(&xoauth2)])
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{mode}: {}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| -> serde_json::Value {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{mode}: no {prefix}in {text}"));
        serde_json::from_str(line).expect("json")
    };
    let results = match field("RESULTS ") {
        serde_json::Value::Object(map) => map,
        other => panic!("{mode}: {other}"),
    };
    Tried {
        capa: field("CAPA "),
        results,
    }
}

/// A local address other than loopback, if this machine has one (the route to a documentation
/// address; nothing is sent).
fn non_loopback_ip() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn every_capability_listed_works_with_and_without_oauth_and_tls() {
    let far = non_loopback_ip();
    // On every address, so a client can come from a non-loopback one.
    let mut extra = vec![];
    let listen;
    if far.is_some() {
        listen = format!("0.0.0.0:{}", crate::harness::free_port());
        extra = vec!["--pop3-listen", listen.as_str()];
    }
    let server = Server::spawn(Data::new(), &extra);
    server.add_user(JOHN);
    deliver(&server, JOHN, &message("hello"));
    let key = TestKey::ed("ed-1");
    let jwks = JwksServer::start(testing::jwks(&[&key]));
    let pop3 = SocketAddr::new("127.0.0.1".parse().expect("ip"), server.pop3.port());

    for oauth in [false, true] {
        if oauth {
            set_oauth(&server, &jwks.url);
        }
        for (mode, addr) in [("plain", pop3), ("stls", pop3), ("pop3s", server.pop3s)] {
            let what = format!("{mode}, OAuth {oauth}");
            let tried = try_all(addr, mode, None, &key);
            tried.all_work(&what);
            let sasl = tried.sasl();
            for mech in ["PLAIN", "LOGIN", "SCRAM-SHA-256"] {
                assert!(sasl.contains(&mech.to_string()), "{what}: {sasl:?}");
            }
            for mech in ["OAUTHBEARER", "XOAUTH2"] {
                assert_eq!(sasl.contains(&mech.to_string()), oauth, "{what}: {sasl:?}");
            }
            assert_eq!(
                tried.results.contains_key("STLS"),
                mode == "plain",
                "{what}"
            );
            assert!(tried.results.contains_key("USER"), "{what}");
        }
        // From afar without TLS: no cleartext credential is offered (nor taken), bearer
        // tokens included; what is offered works.
        if let Some(far) = far {
            let what = format!("plain from {far}, OAuth {oauth}");
            let addr = SocketAddr::new(far, server.pop3.port());
            let tried = try_all(addr, "plain", Some(far), &key);
            tried.all_work(&what);
            assert_eq!(tried.sasl(), ["SCRAM-SHA-256"], "{what}");
            assert!(!tried.results.contains_key("USER"), "{what}");
            assert!(tried.results.contains_key("STLS"), "{what}");
        }
    }
}

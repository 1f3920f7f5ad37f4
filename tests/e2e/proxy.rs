//! PROXY protocol on the listeners: real HAProxy (Debian's `haproxy`, run in the foreground) in
//! front of two frontends with `send-proxy-v2`, configured from `deploy/haproxy.cfg` itself; and
//! raw PROXY headers written by the test, from trusted and untrusted addresses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

const JOHN: &str = "john@example.com";
const GREETING: &[u8] = b"+OK pophost ready\r\n";

/// The deployed HAProxy config, as shipped.
const DEPLOY_CFG: &str = include_str!("../../deploy/haproxy.cfg");

/// A frontend config trusting `trusted` and requiring PROXY headers on the listed listeners.
fn proxy_config(node: &str, trusted: &str, pop3: bool, lmtp: bool) -> String {
    format!(
        "node_id = \"{node}\"\n[proxy]\ntrusted_networks = [\"{trusted}\"]\n\
         [pop3]\nproxy_protocol = {pop3}\n[lmtp]\nproxy_protocol = {lmtp}\n"
    )
}

pub(crate) fn haproxy_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
        .expect("haproxy not found: install the Debian package `haproxy` (scripts/test does)")
}

/// `haproxy -db` in the foreground, killed when dropped.
struct HaProxy {
    child: Child,
    _dir: tempfile::TempDir,
    pop3: SocketAddr,
    lmtp: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl HaProxy {
    /// `deploy/haproxy.cfg` from `defaults` on, with the example addresses replaced by
    /// loopback ports and these two frontends, checks every 300 ms instead of 5 s, and a
    /// `global` section for an unprivileged foreground process.
    fn start(a: &Server, b: &Server) -> HaProxy {
        let pop3: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let lmtp: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let start = DEPLOY_CFG.find("\ndefaults").expect("defaults section");
        let mut cfg = format!("global\n    maxconn 200\n{}", &DEPLOY_CFG[start..]);
        for (from, to) in [
            ("bind :110".to_string(), format!("bind {pop3}")),
            ("bind 10.0.0.5:24".to_string(), format!("bind {lmtp}")),
            ("10.0.0.11:1110".to_string(), a.pop3.to_string()),
            ("10.0.0.12:1110".to_string(), b.pop3.to_string()),
            ("10.0.0.11:2424".to_string(), a.lmtp.to_string()),
            ("10.0.0.12:2424".to_string(), b.lmtp.to_string()),
            ("inter 5s".to_string(), "inter 300ms".to_string()),
        ] {
            assert_eq!(
                cfg.matches(&from).count(),
                1,
                "{from:?} in deploy/haproxy.cfg"
            );
            cfg = cfg.replace(&from, &to);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &cfg).expect("write haproxy.cfg");
        let mut child = Command::new(haproxy_bin())
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn haproxy");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().expect("stderr").push_str(&(line + "\n"));
            }
        });
        let proxy = HaProxy {
            child,
            _dir: dir,
            pop3,
            lmtp,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in [pop3, lmtp] {
            while TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "haproxy did not start:\n{}\n{cfg}",
                    proxy.stderr()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        proxy
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `dst` from the local address `src` (any port).
fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(src, 0)).expect("bind client");
        socket.connect(dst).await.expect("connect")
    });
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
}

/// A line-by-line conversation on a raw stream.
struct Talk {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
}

impl Talk {
    fn new(stream: TcpStream) -> Talk {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Talk {
            rd: BufReader::new(stream.try_clone().expect("clone")),
            wr: stream,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).expect("write");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.rd.read_line(&mut line).expect("read");
        assert!(line.ends_with("\r\n"), "reply {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// An SMTP-style reply, possibly multi-line; returns its last line.
    fn reply(&mut self) -> String {
        loop {
            let line = self.line();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    }

    /// Everything the server sends until it closes; a reset counts as the end.
    fn rest(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match self.rd.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
                Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&all)),
            }
        }
    }
}

/// Waits until a line in one of the `servers`' logs satisfies `found`; returns which server's
/// and the line.
fn logged_by(servers: [&Server; 2], found: impl Fn(&str) -> bool) -> (usize, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, server) in servers.iter().enumerate() {
            if let Some(line) = server.log.lock().expect("log").lines().find(|l| found(l)) {
                return (i, line.to_string());
            }
        }
        assert!(
            Instant::now() < deadline,
            "not logged:\n--- a\n{}--- b\n{}",
            log_of(servers[0]),
            log_of(servers[1])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a line of `server`'s log satisfies `found`, and returns it.
fn log_line(server: &Server, found: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = server.log.lock().expect("log").lines().find(|l| found(l)) {
            return Some(line.to_string());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_of(server: &Server) -> String {
    server.log.lock().expect("log").clone()
}

/// A PROXY v2 header for TCP over IPv4 from `client` to `server`.
fn v2_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(c), SocketAddr::V4(s)) = (client, server) else {
        panic!("IPv4 only");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&s.port().to_be_bytes());
    h
}

/// HAProxy with the shipped config in front of two frontends that require PROXY headers: POP3
/// sessions from 127.0.0.2 land on both frontends and each logs 127.0.0.2 and the client's own
/// port (not HAProxy's 127.0.0.1); an LMTP delivery through HAProxy works; HAProxy's health
/// checks (which send PROXY v2 LOCAL) keep both frontends up without a refused connection.
#[test]
fn pop3_through_haproxy_reaches_both_frontends_with_the_client_address() {
    let a = Server::start_with_config(&proxy_config("fe-a", "127.0.0.1/32", true, true));
    let b = Server::start_with_config(&proxy_config("fe-b", "127.0.0.1/32", true, true));
    a.add_user(JOHN);
    b.add_user(JOHN);
    let haproxy = HaProxy::start(&a, &b);

    let client_ip: IpAddr = [127, 0, 0, 2].into();
    let mut served = [0, 0];
    for _ in 0..12 {
        let stream = connect_from(client_ip, haproxy.pop3);
        let me = stream.local_addr().expect("local");
        let mut c = Talk::new(stream);
        let greeting = c.line();
        assert!(greeting.starts_with("+OK"), "{greeting}");
        assert!(c.cmd(&format!("USER {JOHN}")).starts_with("+OK"));
        let r = c.cmd(&format!("PASS {PASSWORD}"));
        assert!(r.starts_with("+OK"), "{r}");
        assert!(c.cmd("STAT").starts_with("+OK "));
        assert!(c.cmd("QUIT").starts_with("+OK"));
        // The frontend that served it logged the login with the client's own address.
        let needle = format!("peer={me} ");
        let (frontend, line) =
            logged_by([&a, &b], |l| l.contains("logged in") && l.contains(&needle));
        assert!(line.contains("proxy=127.0.0.1:"), "{line}");
        served[frontend] += 1;
        if served[0] > 0 && served[1] > 0 {
            break;
        }
    }
    assert!(
        served[0] > 0 && served[1] > 0,
        "leastconn sent every session to one frontend: {served:?}"
    );

    // LMTP through HAProxy too.
    let replies =
        Lmtp::connect(haproxy.lmtp).deliver("sender@example.net", &[JOHN], &message("via haproxy"));
    assert_eq!(replies.len(), 1);
    assert!(replies[0].starts_with("250 2.0.0"), "{replies:?}");
    logged_by([&a, &b], |l| {
        l.contains("delivery") && l.contains("peer=127.0.0.1:") && l.contains("proxy=127.0.0.1:")
    });

    // Let a few health check rounds pass: each one is a PROXY v2 LOCAL header and a polite QUIT,
    // so no frontend refuses a connection and HAProxy never marks one down.
    std::thread::sleep(Duration::from_millis(1500));
    for (name, server) in [("a", &a), ("b", &b)] {
        let log = log_of(server);
        assert!(
            !log.contains("closing connection"),
            "frontend {name}:\n{log}"
        );
    }
    let stderr = haproxy.stderr();
    assert!(!stderr.contains("is DOWN"), "haproxy:\n{stderr}");
}

/// A PROXY header sent straight to a frontend from an address that is not trusted closes the
/// connection: the client gets at most the greeting and no answer to anything it sent, and the
/// log says why. A client from there that sends no header is served as usual.
#[test]
fn a_proxy_header_from_an_untrusted_address_closes_the_connection() {
    let server = Server::start_with_config(&proxy_config("fe", "127.0.0.3/32", true, true));
    server.add_user(JOHN);
    let headers: [&[u8]; 2] = [
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 110\r\nUSER john@example.com\r\n",
        &[
            v2_header("203.0.113.9:5555".parse().expect("addr"), server.pop3),
            b"USER john@example.com\r\n".to_vec(),
        ]
        .concat(),
    ];
    for header in headers {
        let stream = TcpStream::connect(server.pop3).expect("connect");
        let me = stream.local_addr().expect("local");
        let mut c = Talk::new(stream);
        c.send(header);
        let got = c.rest();
        assert!(
            GREETING.starts_with(&got),
            "more than the greeting: {:?}",
            String::from_utf8_lossy(&got)
        );
        let why = format!("tcp_peer={me}");
        let line = log_line(&server, |l| {
            l.contains("PROXY header from an untrusted address") && l.contains(&why)
        });
        assert!(line.is_some(), "{}", log_of(&server));
    }
    assert!(!log_of(&server).contains("203.0.113.9"));
    // Without a header, the same address is an ordinary client.
    let mut c = Pop3::login(server.pop3, JOHN);
    assert_eq!(c.stat(), (0, 0));
}

/// On a listener that requires PROXY headers, a trusted source that sends anything else, or
/// nothing at all for 5 s, is closed without a greeting.
#[test]
fn a_trusted_source_without_a_header_is_refused() {
    let server = Server::start_with_config(&proxy_config("fe", "127.0.0.1/32", true, false));
    server.add_user(JOHN);

    let mut c = Talk::new(TcpStream::connect(server.pop3).expect("connect"));
    c.send(b"USER john@example.com\r\n");
    assert_eq!(c.rest(), b"");
    assert!(
        log_line(&server, |l| l.contains("closing connection")
            && l.contains("no PROXY header"))
        .is_some(),
        "{}",
        log_of(&server)
    );

    let started = Instant::now();
    let mut c = Talk::new(TcpStream::connect(server.pop3).expect("connect"));
    assert_eq!(c.rest(), b"");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    assert!(
        log_line(&server, |l| l.contains("closing connection")
            && l.contains("within the time limit"))
        .is_some(),
        "{}",
        log_of(&server)
    );
}

/// LMTP behind a PROXY v2 header: the delivery works, and the log and the `Received:` line show
/// the client address from the header, not the TCP peer.
#[test]
fn lmtp_with_a_proxy_v2_header_records_the_client_address() {
    let server = Server::start_with_config(&proxy_config("fe", "127.0.0.1/32", false, true));
    server.add_user(JOHN);
    let client: SocketAddr = "198.51.100.7:40000".parse().expect("addr");

    let mut c = Talk::new(TcpStream::connect(server.lmtp).expect("connect"));
    c.send(&v2_header(client, "192.0.2.1:24".parse().expect("addr")));
    assert!(c.line().starts_with("220 "));
    c.send(b"LHLO mta.example.net\r\n");
    assert!(c.reply().starts_with("250 "));
    assert!(c.cmd("MAIL FROM:<alice@example.net>").starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{JOHN}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(&stuff(&message("proxied")));
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));

    let line = log_line(&server, |l| {
        l.contains("delivery") && l.contains("peer=198.51.100.7:40000")
    });
    assert!(line.is_some(), "{}", log_of(&server));
    // POP3 takes no PROXY headers here: a direct login.
    let mut p = Pop3::login(server.pop3, JOHN);
    let (status, body) = p.fetch("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("([198.51.100.7])"), "{text}");
}

/// The shipped config is valid as it is.
#[test]
fn the_deployed_haproxy_config_is_valid() {
    let out = Command::new(haproxy_bin())
        .args(["-c", "-f"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/haproxy.cfg"
        ))
        .output()
        .expect("run haproxy -c");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

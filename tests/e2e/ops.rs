//! Operations (issue 7): `/metrics` on the admin listener, the logout summary line and JSON
//! logs, OTLP trace export to a stand-in collector, the limits (pre-login timeout, bad-command
//! budget, per-address connections before login, TLS handshake timeout, a slow reader of a large
//! RETR), graceful drain on SIGTERM, `pophost who` / `pophost kick`, and no secret in any log
//! line even at `RUST_LOG=trace`. All over real TCP against the real binary.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::harness::{
    AdminHttp, Data, PASSWORD, Pop3, Server, deliver, http, message, show, signal,
};

const USER: &str = "john@example.com";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `/metrics` as `name{labels}` -> value (comments and blank lines skipped).
pub(crate) fn scrape(server: &Server) -> HashMap<String, f64> {
    let res = http(server.admin, "GET", "/metrics", &[], "");
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(
        res.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "content type"
    );
    parse_metrics(&res.body)
}

fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series value");
            (
                series.to_string(),
                value.parse().unwrap_or_else(|_| panic!("value in {l:?}")),
            )
        })
        .collect()
}

pub(crate) fn get(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_move_when_a_session_runs() {
    let server = Server::start();
    server.add_user(USER);
    deliver(&server, USER, &message("one"));
    deliver(&server, USER, &message("two"));
    let before = scrape(&server);

    let mut c = Pop3::login(server.pop3, USER);
    let (status, _) = c.fetch("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(c.closed());
    // A wrong password and a lock conflict are counted too.
    let mut holder = Pop3::login(server.pop3, USER);
    let mut other = Pop3::connect(server.pop3);
    other.cmd(&format!("USER {USER}"));
    let r = other.cmd(&format!("PASS {PASSWORD}"));
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    other.cmd(&format!("USER {USER}"));
    assert!(other.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    holder.cmd("QUIT");
    other.cmd("QUIT");
    drop(other);

    // The session is over once QUIT is answered, but its task may still be finishing: wait for
    // the open-connections gauge to come back down rather than sleeping a fixed time.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let m = scrape(&server);
        if get(&m, r#"pophost_connections_open{listener="pop3"}"#) == 0.0
            || Instant::now() > deadline
        {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let delta = |s: &str| get(&after, s) - get(&before, s);
    let excerpt: Vec<String> = {
        let mut lines: Vec<String> = after
            .iter()
            .filter(|(k, _)| {
                !k.contains("_bucket")
                    && (k.contains("pop3") || k.contains("messages") || k.contains("lock"))
                    || k.contains("op=\"lock\"}")
                    || k.contains("pool")
            })
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        lines.sort();
        lines
    };
    eprintln!("/metrics after the session:\n{}", excerpt.join("\n"));

    assert_eq!(delta(r#"pophost_connections_total{listener="pop3"}"#), 3.0);
    assert_eq!(
        get(&after, r#"pophost_connections_open{listener="pop3"}"#),
        0.0
    );
    assert_eq!(
        delta(r#"pophost_pop3_logins_total{result="ok",mechanism="USER"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"pophost_pop3_logins_total{result="in_use",mechanism="USER"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"pophost_pop3_logins_total{result="rejected",mechanism="USER"}"#),
        1.0
    );
    assert_eq!(delta(r#"pophost_pop3_commands_total{command="RETR"}"#), 1.0);
    assert_eq!(delta(r#"pophost_pop3_commands_total{command="QUIT"}"#), 3.0);
    assert_eq!(delta("pophost_messages_retrieved_total"), 1.0);
    assert_eq!(delta("pophost_messages_deleted_total"), 1.0);
    assert_eq!(delta("pophost_lock_conflicts_total"), 1.0);
    assert!(delta("pophost_pop3_bytes_sent_total") > 100.0);
    // Two deliveries happened before the first scrape.
    assert_eq!(get(&before, "pophost_messages_delivered_total"), 2.0);
    assert_eq!(delta(r#"pophost_store_seconds_count{op="lock"}"#), 3.0);
    assert_eq!(
        delta(r#"pophost_store_seconds_count{op="commit_update"}"#),
        2.0
    );
    assert!(get(&after, r#"pophost_store_seconds_sum{op="read_parts"}"#) > 0.0);
    assert!(get(&after, r#"pophost_store_pool_connections{state="max"}"#) >= 1.0);
    assert!(after.contains_key(r#"pophost_store_pool_connections{state="in_use"}"#));
}

/// The server's log so far.
fn log(server: &Server) -> String {
    server.log.lock().expect("log").clone()
}

/// Waits until the log has a line containing every one of `needles`.
fn wait_for_line(server: &Server, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(line) = log(server)
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}:\n{}",
            log(server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn logout_writes_one_summary_line_in_the_session_span() {
    let server = Server::start();
    server.add_user(USER);
    deliver(&server, USER, &message("one"));
    let mut c = Pop3::login(server.pop3, USER);
    c.fetch("RETR 1");
    c.cmd("DELE 1");
    c.cmd("QUIT");
    let line = wait_for_line(&server, &["session summary", "user=\"john@example.com\""]);
    for field in [
        "tenant=example.com",
        "peer=127.0.0.1:",
        "session=",
        "end=\"quit\"",
        "retr=1",
        "dele=1",
        "commands=5",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[test]
fn json_logs_carry_the_session_fields() {
    let server = Server::spawn(Data::new().with_config("[log]\nformat = \"json\"\n"), &[]);
    server.add_user(USER);
    let mut c = Pop3::login(server.pop3, USER);
    c.cmd("QUIT");
    let line = wait_for_line(&server, &["session summary"]);
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["fields"]["message"], "session summary");
    assert_eq!(v["fields"]["end"], "quit");
    assert_eq!(v["span"]["user"], USER);
    assert_eq!(v["span"]["tenant"], "example.com");
    assert_eq!(v["level"], "INFO");
}

// ---- OTLP ----

/// What the collector received: ("METHOD PATH", body) per request.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A stand-in OTLP/HTTP collector: records each request's method, path and body, answers 200.
struct Collector {
    addr: SocketAddr,
    requests: Requests,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests: Requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let seen = seen.clone();
                std::thread::spawn(move || serve_otlp(stream, &seen));
            }
        });
        Collector { addr, requests }
    }
}

/// HTTP/1.1 requests with a Content-Length body on one connection, until it closes.
fn serve_otlp(stream: TcpStream, seen: &Mutex<Vec<(String, Vec<u8>)>>) {
    let mut rd = BufReader::new(stream.try_clone().expect("clone"));
    let mut wr = stream;
    loop {
        let mut request_line = String::new();
        if rd.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if rd.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if rd.read_exact(&mut body).is_err() {
            return;
        }
        let what = request_line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        seen.lock().expect("requests").push((what, body));
        let _ = wr.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn otlp_exports_session_spans_to_the_collector() {
    let collector = Collector::start();
    let config = format!(
        "[telemetry]\notlp_endpoint = \"http://{}/v1/traces\"\nservice_name = \"pophost-e2e\"\n",
        collector.addr
    );
    let server = Server::start_with_config(&config);
    server.add_user(USER);
    let mut c = Pop3::login(server.pop3, USER);
    c.cmd("STAT");
    c.cmd("QUIT");
    assert!(c.closed());
    // SIGTERM flushes the batch still queued (the batch delay is seconds) before exiting.
    let (status, _data) = server.terminate();
    assert!(status.success(), "{status}");
    let requests = collector.requests.lock().expect("requests");
    assert!(!requests.is_empty(), "the collector received nothing");
    let (what, body) = requests
        .iter()
        .find(|(_, body)| contains(body, b"pop3"))
        .unwrap_or_else(|| panic!("no pop3 span in {} requests", requests.len()));
    assert_eq!(what, "POST /v1/traces");
    // Protobuf keeps strings as they are: the span's attributes and the resource are readable.
    for needle in [
        &b"pophost-e2e"[..],
        b"session",
        b"peer",
        b"tenant",
        b"example.com",
        USER.as_bytes(),
    ] {
        assert!(
            contains(body, needle),
            "{:?} not in the exported span",
            String::from_utf8_lossy(needle)
        );
    }
    assert!(
        !contains(body, PASSWORD.as_bytes()),
        "a password was exported"
    );
}

#[test]
fn without_an_endpoint_nothing_is_exported() {
    // Off by default: no exporter is built, so no connection is even attempted. A collector on
    // the default OTLP port would see nothing; here the log says no export was set up.
    let server = Server::start();
    server.add_user(USER);
    Pop3::login(server.pop3, USER).cmd("QUIT");
    wait_for_line(&server, &["session summary"]);
    assert!(!log(&server).contains("OTLP"), "{}", log(&server));
}

// ---- limits ----

#[test]
fn bad_commands_close_the_connection_before_and_after_login() {
    let server = Server::start_with_config(
        "[pop3]\nbad_commands_before_login = 3\nbad_commands_after_login = 5\n",
    );
    server.add_user(USER);
    let mut c = Pop3::connect(server.pop3);
    for bad in ["HELO", "STAT", "RETR x"] {
        assert!(c.cmd(bad).starts_with("-ERR"), "{bad}");
    }
    assert_eq!(c.cmd("BOGUS"), "-ERR too many bad commands, closing");
    assert!(c.closed());

    // Failed logins are not bad commands (the auth penalty handles guessing); a valid command
    // in between does not reset the count.
    let mut c = Pop3::connect(server.pop3);
    c.cmd(&format!("USER {USER}"));
    assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    c.cmd(&format!("USER {USER}"));
    assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    assert!(!c.capa().is_empty());
    assert!(c.cmd("XYZZY").starts_with("-ERR"));
    // After login the budget starts again, at its own size.
    c.cmd(&format!("USER {USER}"));
    assert!(c.cmd(&format!("PASS {PASSWORD}")).starts_with("+OK"));
    for _ in 0..5 {
        let r = c.cmd("FOO");
        assert!(r.starts_with("-ERR") && !r.contains("too many"), "{r}");
    }
    assert_eq!(c.cmd("STLS"), "-ERR too many bad commands, closing");
    assert!(c.closed());
    // Closed without UPDATE, and the lock is released: the user can log in again.
    let mut again = Pop3::login(server.pop3, USER);
    again.cmd("QUIT");
}

#[test]
fn the_pre_login_timeout_is_shorter_than_the_idle_timeout() {
    let server = Server::start_with_config("[pop3]\nlogin_timeout_secs = 1\n");
    server.add_user(USER);
    let started = Instant::now();
    let mut idle = Pop3::connect(server.pop3);
    assert!(idle.closed(), "a silent client before login is closed");
    let took = started.elapsed();
    eprintln!("pre-login connection closed after {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    // Logged in, the 10-minute autologout applies: 3 silent seconds are fine.
    let mut c = Pop3::login(server.pop3, USER);
    std::thread::sleep(Duration::from_secs(3));
    assert!(c.cmd("NOOP").starts_with("+OK"));
    c.cmd("QUIT");
    wait_for_line(&server, &["session summary", "end=\"login-timeout\""]);
}

#[test]
fn connections_before_login_are_limited_per_client_address() {
    let server = Server::start_with_config("[pop3]\nmax_connections_per_ip = 2\n");
    server.add_user(USER);
    let mut first = Pop3::connect(server.pop3);
    let _second = Pop3::connect(server.pop3);
    let (mut third, greeting) = Pop3::connect_greeting(server.pop3);
    assert_eq!(
        greeting,
        "-ERR [SYS/TEMP] too many connections from your address, try again later"
    );
    assert!(third.closed());
    // POP3S shares the count, and gets no plain-text line: just a close.
    let tls = TcpStream::connect(server.pop3s).expect("connect");
    tls.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    assert!(matches!((&tls).read(&mut buf), Ok(0) | Err(_)));
    // A login gives its slot back.
    first.cmd(&format!("USER {USER}"));
    assert!(first.cmd(&format!("PASS {PASSWORD}")).starts_with("+OK"));
    let mut fourth = Pop3::connect(server.pop3);
    assert!(!fourth.capa().is_empty());
}

#[test]
fn a_stalled_tls_handshake_is_cut_off() {
    let server = Server::start_with_config("[tls]\nhandshake_timeout_secs = 1\n");
    for (addr, stls) in [(server.pop3s, false), (server.pop3, true)] {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut rd = BufReader::new(stream.try_clone().expect("clone"));
        let mut wr = stream;
        if stls {
            let mut line = String::new();
            rd.read_line(&mut line).expect("greeting");
            wr.write_all(b"STLS\r\n").expect("write");
            line.clear();
            rd.read_line(&mut line).expect("STLS reply");
            assert!(line.starts_with("+OK"), "{line}");
        }
        // No ClientHello: the server gives up after the handshake timeout, not the idle one.
        let started = Instant::now();
        let mut rest = Vec::new();
        let _ = rd.read_to_end(&mut rest);
        let took = started.elapsed();
        eprintln!("stalled handshake (stls={stls}) closed after {took:?}");
        assert!(took < Duration::from_secs(25), "{took:?}");
    }
    wait_for_line(&server, &["TLS handshake failed", "timed out"]);
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The send and receive queues (octets) of the TCP socket on this machine whose local and
/// remote ports are `local` and `remote`, as `/proc/net/tcp` (or `tcp6`) reports them: bytes
/// written but not yet acknowledged by the peer, and bytes received but not yet read.
fn tcp_queues(local: u16, remote: u16) -> Option<(u64, u64)> {
    let port = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let hex = |v: &str| u64::from_str_radix(v, 16).ok();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(table) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // State 01 is ESTABLISHED: an earlier connection's TIME_WAIT entry may share the ports.
            if f.len() > 4
                && f[3] == "01"
                && port(f[1]) == Some(local)
                && port(f[2]) == Some(remote)
            {
                let (tx, rx) = f[4].split_once(':')?;
                return Some((hex(tx)?, hex(rx)?));
            }
        }
    }
    None
}

/// Waits until the server is stuck writing to `client`, a connection to `server` whose owner
/// reads nothing: the server's socket has octets it cannot send, the client's receive queue
/// holds octets, and neither queue has moved for half a second (a full receive window). Calls
/// `each` at every look, so a caller can take readings meanwhile. Returns the two queue lengths.
fn wait_until_the_server_is_stalled(
    client: SocketAddr,
    server: SocketAddr,
    mut each: impl FnMut(),
) -> (u64, u64) {
    const STILL: Duration = Duration::from_millis(500);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    let mut since = Instant::now();
    loop {
        each();
        let sent = tcp_queues(server.port(), client.port()).map(|(tx, _)| tx);
        let received = tcp_queues(client.port(), server.port()).map(|(_, rx)| rx);
        let now = (sent.unwrap_or(0), received.unwrap_or(0));
        if last != Some(now) {
            last = Some(now);
            since = Instant::now();
        } else if now.0 > 0 && now.1 > 0 && since.elapsed() >= STILL {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the server never stalled writing to {client}: its send queue {sent:?}, \
             the client's receive queue {received:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A logged-in POP3 connection, and its local address (to find it in `/proc/net/tcp`).
fn login_with_address(server: &Server, user: &str) -> (Pop3, SocketAddr) {
    let stream = TcpStream::connect(server.pop3).expect("connect");
    let local = stream.local_addr().expect("local address");
    let mut c = Pop3::from_stream(stream);
    assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
    let r = c.cmd(&format!("PASS {PASSWORD}"));
    assert!(r.starts_with("+OK"), "login {user}: {r}");
    (c, local)
}

#[test]
fn a_slow_reader_of_a_large_retr_does_not_make_the_server_buffer_it() {
    const SIZE: usize = 40 * 1024 * 1024;
    let server = Server::start();
    server.add_user(USER);
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < SIZE {
        big.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n",
        );
    }
    deliver(&server, USER, &big);
    // A fresh process, so the delivery's memory is not counted (or reused) below.
    let (status, data) = server.terminate();
    assert!(status.success());
    let server = Server::restart(data);

    let (mut c, local) = login_with_address(&server, USER);
    let base = rss_kib(server.pid());
    c.send("RETR 1");
    // The client reads nothing: the server may fill the socket buffers and its own bounded
    // queue, then must wait. Its memory is read all along, until it is seen waiting.
    let mut peak = base;
    let (sent, received) = wait_until_the_server_is_stalled(local, server.pop3, || {
        peak = peak.max(rss_kib(server.pid()));
    });
    peak = peak.max(rss_kib(server.pid()));
    let grew = peak.saturating_sub(base);
    eprintln!(
        "RETR of {} MiB, client not reading: stalled with {sent} octets in the server's send \
         queue and {received} in the client's receive queue; server RSS {base} KiB -> peak \
         {peak} KiB (+{grew} KiB)",
        SIZE >> 20
    );
    // Then everything arrives intact.
    let status = c.line();
    assert!(status.starts_with("+OK"), "{status}");
    let body = crate::harness::unstuff(&c.multi_raw());
    // LMTP put a Received: header in front.
    assert!(body.ends_with(&big), "the message arrived whole");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // Buffering the message would cost at least its 40 MiB; the bound is a few chunks.
    assert!(
        grew < 16 * 1024,
        "server grew by {grew} KiB while the client stalled"
    );
}

// ---- drain ----

#[test]
fn sigterm_drains_sessions_and_exits_zero() {
    let data = Data::new().with_config("[shutdown]\ngrace_secs = 3\n");
    let server = Server::spawn(data, &[]);
    server.add_user(USER);
    server.add_user("mary@example.com");
    for subject in ["a", "b"] {
        deliver(&server, USER, &message(subject));
        deliver(&server, "mary@example.com", &message(subject));
    }
    // John marks a message deleted and never QUITs; Mary finishes during the grace period;
    // a third client has not logged in.
    let mut john = Pop3::login(server.pop3, USER);
    assert!(john.cmd("DELE 1").starts_with("+OK"));
    let mut mary = Pop3::login(server.pop3, "mary@example.com");
    let mut anon = Pop3::connect(server.pop3);
    let pop3 = server.pop3;

    let started = Instant::now();
    signal(server.pid(), "TERM");
    // New connections are refused at once (the listener is closed).
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(pop3).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Running sessions go on within the grace period: commands are answered, QUIT commits.
    assert!(john.cmd("NOOP").starts_with("+OK"));
    assert!(mary.cmd("DELE 1").starts_with("+OK"));
    let r = mary.cmd("QUIT");
    assert!(r.starts_with("+OK"), "{r}");
    // At the deadline the rest are told and closed.
    let last = john.line();
    let waited = started.elapsed();
    assert_eq!(
        last,
        "-ERR [SYS/TEMP] server shutting down, try again later"
    );
    assert!(john.closed());
    assert_eq!(
        anon.try_line().as_deref(),
        Some("-ERR [SYS/TEMP] server shutting down, try again later")
    );
    eprintln!("drain: sessions told [SYS/TEMP] {waited:?} after SIGTERM (grace 3 s)");
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    let (status, data) = server.terminate();
    assert!(status.success(), "exit status {status}");
    // John's DELE was not applied (no UPDATE) and his lock is gone; Mary's QUIT was.
    assert_eq!(data.sql("SELECT count(*) FROM maildrop_locks"), "0");
    let server = Server::restart(data);
    let mut john = Pop3::login(server.pop3, USER);
    assert_eq!(john.stat().0, 2);
    let mut mary = Pop3::login(server.pop3, "mary@example.com");
    assert_eq!(mary.stat().0, 1);
    let log = log(&server);
    assert!(!log.contains("panicked"), "{log}");
}

// ---- who / kick ----

#[test]
fn who_lists_sessions_and_kick_ends_one_and_is_audited() {
    // Lease renewal every second (a third of the TTL), so the kick lands quickly.
    let server = Server::start_with_config("[locks]\nttl_secs = 3\n");
    server.add_user(USER);
    deliver(&server, USER, &message("keep"));
    let empty = server.cli(&["who"]);
    assert!(empty.status.success(), "{}", show(&empty));
    assert!(String::from_utf8_lossy(&empty.stdout).contains("0 session(s)"));

    let mut c = Pop3::login(server.pop3, USER);
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    let out = server.cli(&["who"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("pophost who:\n{text}");
    assert!(text.contains(USER) && text.contains("local"), "{text}");
    assert!(text.contains("1 session(s)"), "{text}");

    let out = server.cli(&["kick", USER]);
    assert!(out.status.success(), "{}", show(&out));
    // The frontend notices at its next lease renewal and tells the client.
    let line = c.line();
    assert_eq!(line, "-ERR [SYS/TEMP] session ended by an administrator");
    assert!(c.closed());
    let mut again = Pop3::login(server.pop3, USER);
    assert_eq!(again.stat().0, 1, "the kicked session deleted nothing");
    again.cmd("QUIT");

    let audit = server.data().sql(
        "SELECT actor || ' ' || action || ' ' || object || ' ' || \
         CASE WHEN success THEN 'ok' ELSE 'failed' END \
         FROM audit_log ORDER BY id DESC LIMIT 1",
    );
    assert_eq!(audit, format!("cli session.end {USER} ok"));
    // Kicking nobody fails, and is audited as such.
    let out = server.cli(&["kick", USER]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no POP3 session"));
    let out = server.cli(&["kick", "not an address"]);
    assert!(!out.status.success());
}

// ---- secrets ----

#[test]
fn no_secret_reaches_the_log_at_trace_level() {
    const APOP_SECRET: &str = "apop-Secret-4711";
    const ADMIN_PASSWORD: &str = "admin Pass-0815 long";
    const API_USER_PASSWORD: &str = "api-created-Pw-2342";
    let data = Data::new().with_config("[pop3]\napop = true\n");
    let server = Server::spawn_env(data, &[], &[("RUST_LOG", "trace")]);
    server.add_user(USER);
    let ok = |out: std::process::Output| assert!(out.status.success(), "{}", show(&out));
    ok(server.cli(&["domain", "set", "example.com", "--allow-apop", "true"]));
    ok(server.cli(&["user", "apop", USER, "--secret", APOP_SECRET]));
    ok(server.cli(&[
        "admin",
        "add",
        "root@example.com",
        "--super",
        "--password",
        ADMIN_PASSWORD,
    ]));

    // USER/PASS, right and wrong.
    Pop3::login(server.pop3, USER).cmd("QUIT");
    let mut c = Pop3::connect(server.pop3);
    c.cmd(&format!("USER {USER}"));
    assert!(c.cmd(&format!("PASS {PASSWORD}x")).starts_with("-ERR"));
    // AUTH PLAIN with an initial response, and as a continuation.
    let plain = b64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let mut c = Pop3::connect(server.pop3);
    assert!(c.cmd(&format!("AUTH PLAIN {plain}")).starts_with("+OK"));
    c.cmd("QUIT");
    let mut c = Pop3::connect(server.pop3);
    assert!(c.cmd("AUTH PLAIN").starts_with("+ "));
    assert!(c.cmd(&plain).starts_with("+OK"));
    c.cmd("QUIT");
    // AUTH LOGIN.
    let mut c = Pop3::connect(server.pop3);
    assert!(c.cmd("AUTH LOGIN").starts_with("+ "));
    assert!(c.cmd(&b64(USER.as_bytes())).starts_with("+ "));
    assert!(c.cmd(&b64(PASSWORD.as_bytes())).starts_with("+OK"));
    c.cmd("QUIT");
    // SCRAM-SHA-256 (a Python client; see sasl.rs).
    let transcript = crate::sasl::scram(&server, USER, PASSWORD);
    assert!(transcript.contains("+OK"), "{transcript}");
    // APOP.
    let (mut c, reply) = crate::apop::apop(&server, USER, APOP_SECRET);
    assert!(reply.starts_with("+OK"), "{reply}");
    c.cmd("QUIT");
    // Admin sign-in, then an API token, and a user created through the API with a password.
    let admin = AdminHttp::sign_in(server.admin, "root@example.com", ADMIN_PASSWORD);
    let page = admin.post("/tokens", &[("name", "ops test")]);
    let token = page
        .body
        .split("id=\"new-token\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("new token on the page")
        .to_string();
    assert!(token.starts_with("ph_"), "{token}");
    let auth = format!("Bearer {token}");
    let created = http(
        server.admin,
        "POST",
        "/api/v1/domains/example.com/users",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &format!(r#"{{"local":"api","password":"{API_USER_PASSWORD}"}}"#),
    );
    assert!(created.status < 300, "{} {}", created.status, created.body);
    let mut c = Pop3::connect(server.pop3);
    c.cmd("USER api@example.com");
    assert!(
        c.cmd(&format!("PASS {API_USER_PASSWORD}"))
            .starts_with("+OK")
    );
    c.cmd("QUIT");
    wait_for_line(&server, &["session summary", "user=\"api@example.com\""]);
    let log = log(&server);
    assert!(log.lines().count() > 50, "trace logging is on:\n{log}");
    let mut secrets = vec![
        PASSWORD.to_string(),
        APOP_SECRET.to_string(),
        ADMIN_PASSWORD.to_string(),
        API_USER_PASSWORD.to_string(),
        token.clone(),
        token.trim_start_matches("ph_").to_string(),
        plain.clone(),
        b64(PASSWORD.as_bytes()),
        "$argon2".to_string(),
        // URL-encoded, as the sign-in form sends it.
        ADMIN_PASSWORD.replace(' ', "+"),
    ];
    secrets.extend(
        PASSWORD
            .split(' ')
            .filter(|w| w.len() > 4)
            .map(str::to_string),
    );
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{secret:?} appears in the log:\n{}",
            log.lines()
                .filter(|l| l.contains(secret.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn a_stalled_reader_cannot_hold_up_the_drain() {
    const SIZE: usize = 48 * 1024 * 1024;
    // What the drain promises: sessions get `shutdown.grace_secs` to finish (`listener::serve`),
    // then a write still pending gets `WRITE_AFTER_ABORT` more (`send_bytes` in
    // crates/pop3-server/src/session.rs) before the session is ended.
    const GRACE: Duration = Duration::from_secs(1);
    use pop3_server::WRITE_AFTER_ABORT;
    // Ending the session and then the process: releasing the lock, closing the store.
    const MARGIN: Duration = Duration::from_secs(3);
    let server =
        Server::start_with_config(&format!("[shutdown]\ngrace_secs = {}\n", GRACE.as_secs()));
    server.add_user(USER);
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < SIZE {
        big.extend_from_slice(&[b'x'; 998]);
        big.extend_from_slice(b"\r\n");
    }
    deliver(&server, USER, &big);
    deliver(&server, USER, &message("small"));
    let (mut c, local) = login_with_address(&server, USER);
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    // RETR, and never read: the server blocks writing with the kernel buffers full.
    c.send("RETR 1");
    let (sent, received) = wait_until_the_server_is_stalled(local, server.pop3, || {});
    eprintln!("stalled: {sent} octets in the server's send queue, {received} unread by the client");
    let started = Instant::now();
    let log = server.log.clone();
    let (status, data) = server.terminate();
    let took = started.elapsed();
    let log = log.lock().expect("log").clone();
    let ended = log
        .lines()
        .find(|l| l.contains("session summary") && l.contains(USER))
        .unwrap_or_else(|| panic!("no session summary:\n{log}"));
    eprintln!("{ended}");
    assert!(ended.contains("end=\"shutdown\""), "{ended}");
    eprintln!(
        "SIGTERM with a stalled RETR reader: exited {status} after {took:?} (grace {GRACE:?}, \
         last write {WRITE_AFTER_ABORT:?})"
    );
    assert!(status.success(), "{status}");
    // The stalled session was given its grace and its last write, and then ended: the exit
    // does not wait for the client (whose idle timeout is 10 minutes).
    assert!(
        took >= GRACE + WRITE_AFTER_ABORT,
        "exited after {took:?}, before the stalled write's time was up"
    );
    assert!(
        took < GRACE + WRITE_AFTER_ABORT + MARGIN,
        "exited after {took:?}: the stalled reader held up the drain"
    );
    drop(c);
    // Nothing was deleted and the lock is free.
    assert_eq!(data.sql("SELECT count(*) FROM maildrop_locks"), "0");
    let server = Server::restart(data);
    let mut c = Pop3::login(server.pop3, USER);
    assert_eq!(c.stat().0, 2);
}

#[test]
fn sighup_reloads_the_log_filter_from_the_config_file() {
    let data = Data::new().with_config("[log]\nfilter = \"info\"\n");
    let config = data.dir.join("pophost.toml");
    // RUST_LOG empty: the config file's log.filter is in force.
    let server = Server::spawn_env(data, &[], &[("RUST_LOG", "")]);
    server.add_user(USER);
    Pop3::login(server.pop3, USER).cmd("QUIT");
    wait_for_line(&server, &["session summary"]);
    assert!(!log(&server).contains(" DEBUG "), "{}", log(&server));

    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("filter = \"info\"", "filter = \"debug\""),
    )
    .expect("write");
    signal(server.pid(), "HUP");
    wait_for_line(&server, &["log filter reloaded", "filter=debug"]);
    Pop3::login(server.pop3, USER).cmd("QUIT");
    // The session's own debug line, now let through.
    wait_for_line(&server, &[" DEBUG ", "session ended"]);

    // A bad filter keeps the old one and says why; the certificates are reloaded as before.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("filter = \"debug\"", "filter = \"=[\""),
    )
    .expect("write");
    signal(server.pid(), "HUP");
    wait_for_line(&server, &["log filter not reloaded", "log.filter"]);
    wait_for_line(&server, &["TLS certificates reloaded"]);
    let mut c = Pop3::login(server.pop3, USER);
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn auth_penalties_and_limits_are_counted() {
    // No fixed delay, but the per-network penalty on: free for 5 failures, then 1 s and up.
    let server = Server::start_with_config(
        "[auth]\nfailure_delay_ms = 0\nip_penalty_max_secs = 2\n\
         [pop3]\nbad_commands_before_login = 0\n",
    );
    server.add_user(USER);
    let mut c = Pop3::connect(server.pop3);
    for _ in 0..7 {
        c.cmd(&format!("USER {USER}"));
        assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    }
    // With no bad commands allowed, the first one closes.
    let mut bad = Pop3::connect(server.pop3);
    assert_eq!(bad.cmd("HELO"), "-ERR too many bad commands, closing");
    let m = scrape(&server);
    assert!(get(&m, "pophost_auth_penalties_total") >= 2.0, "{m:?}");
    assert_eq!(
        get(
            &m,
            r#"pophost_pop3_logins_total{result="rejected",mechanism="USER"}"#
        ),
        7.0
    );
    assert_eq!(
        get(&m, r#"pophost_pop3_limited_total{limit="bad_commands"}"#),
        1.0
    );
    assert_eq!(
        get(&m, r#"pophost_pop3_commands_total{command="invalid"}"#),
        1.0
    );
}

/// Two servers on one SQLite file (issue 16): the second refuses to start, naming the first by
/// its pid, before it touches the store: the first one's session keeps its maildrop lock and
/// its QUIT applies, a DATA in flight keeps its half-written body and is delivered. The CLI
/// commands still work beside the running server.
#[test]
fn a_second_server_on_the_same_sqlite_file_is_refused() {
    use crate::harness::{DataInFlight, serve_refused};
    let server = Server::spawn(Data::sqlite(), &[]);
    server.add_user(USER);
    deliver(&server, USER, &message("delete me"));
    let mut session = Pop3::login(server.pop3, USER);
    assert!(session.cmd("DELE 1").starts_with("+OK"));
    let in_flight = DataInFlight::start(&server, USER);

    let out = serve_refused(server.data().command(), Duration::from_secs(30));
    let db = server.data().dir.join("pophost.db");
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "another pophost (pid {}) is serving {}",
            server.pid(),
            db.display()
        )),
        "{}",
        show(&out)
    );

    let reply = in_flight.finish();
    assert!(reply.starts_with("250"), "DATA in flight: {reply}");
    let out = server.cli(&["user", "add", "jane@example.com", "--password", PASSWORD]);
    assert!(
        out.status.success(),
        "CLI beside the server: {}",
        show(&out)
    );
    let mut other = Pop3::connect(server.pop3);
    other.cmd(&format!("USER {USER}"));
    let r = other.cmd(&format!("PASS {PASSWORD}"));
    assert!(
        r.starts_with("-ERR [IN-USE]"),
        "the maildrop lock is kept: {r}"
    );
    assert!(
        session.cmd("QUIT").starts_with("+OK"),
        "the first session's QUIT"
    );
    let mut c = Pop3::login(server.pop3, USER);
    let (_, body) = c.fetch("TOP 1 0");
    assert_eq!(c.stat().0, 1);
    assert!(String::from_utf8_lossy(&body).contains("Subject: in flight"));
}

/// The store holds password hashes and SCRAM verifiers (issue 16): a data directory pophost
/// makes is 0700, and the database with its -wal and -shm files, the serve lock and the TLS key
/// are 0600, whether the CLI or the server made them first.
#[test]
fn the_data_directory_and_the_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        let meta = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        format!("{:o}", meta.permissions().mode() & 0o777)
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pophost-data");
    let out = crate::harness::cli(&dir, &["domain", "add", "example.com"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(mode(&dir), "700", "data directory made by the CLI");
    assert_eq!(
        mode(&dir.join("pophost.db")),
        "600",
        "database made by the CLI"
    );

    let mut data = Data::sqlite().with_config("");
    data.dir = data.dir.join("pophost-data");
    let server = Server::spawn(data, &[]);
    server.add_user(USER);
    deliver(&server, USER, &message("m"));
    let dir = &server.data().dir;
    for (file, want) in [
        ("", "700"),
        ("pophost.db", "600"),
        ("pophost.db-wal", "600"),
        ("pophost.db-shm", "600"),
        ("pophost.db.lock", "600"),
        ("tls/key.pem", "600"),
    ] {
        assert_eq!(mode(&dir.join(file)), want, "mode of {file:?}");
    }
}

//! `deploy/` exercised without a container engine: the compose recipe (a one-shot `migrate`,
//! two frontends on one Postgres, HAProxy in front) run with the same binary and the very
//! config files compose.yaml mounts (`deploy/compose/*.toml`, `deploy/compose/haproxy.cfg`), with
//! only the addresses changed from compose's network to loopback ports. Then a rolling restart:
//! one frontend drained with SIGTERM while clients keep logging in through HAProxy.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::free_port;
use crate::harness::*;
use crate::proxy::haproxy_bin;

const COMPOSE: &str = include_str!("../../deploy/compose.yaml");
const POP1: &str = include_str!("../../deploy/compose/pophost-1.toml");
const POP2: &str = include_str!("../../deploy/compose/pophost-2.toml");
const HAPROXY: &str = include_str!("../../deploy/compose/haproxy.cfg");
const HAPROXY_IP: &str = "172.28.0.5";
const JOHN: &str = "john@example.com";

/// A compose frontend config with HAProxy's compose address replaced by loopback.
fn config(toml: &str) -> String {
    let from = format!("[\"{HAPROXY_IP}/32\"]");
    assert_eq!(toml.matches(&from).count(), 1, "trusted_networks in {toml}");
    toml.replace(&from, "[\"127.0.0.1/32\"]")
}

/// `haproxy -db` with deploy/compose/haproxy.cfg, killed when dropped.
struct HaProxy {
    child: Child,
    _dir: tempfile::TempDir,
    pop3: SocketAddr,
    pop3s: SocketAddr,
    lmtp: SocketAddr,
}

impl HaProxy {
    fn log(&self) -> String {
        ["haproxy.log", "haproxy.err"]
            .map(|f| std::fs::read_to_string(self._dir.path().join(f)).unwrap_or_default())
            .join("")
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy(a: &Server, b: &Server) -> HaProxy {
    let port = || -> SocketAddr { ([127, 0, 0, 1], free_port()).into() };
    let (pop3, pop3s, lmtp) = (port(), port(), port());
    let mut cfg = HAPROXY.to_string();
    let check = |s: &Server| format!("{} send-proxy-v2 check port {}", s.pop3s, s.pop3.port());
    for (from, to) in [
        ("bind :110".to_string(), format!("bind {pop3}")),
        ("bind :995".to_string(), format!("bind {pop3s}")),
        ("bind :24".to_string(), format!("bind {lmtp}")),
        ("pop1:1110".to_string(), a.pop3.to_string()),
        ("pop2:1110".to_string(), b.pop3.to_string()),
        (
            "pop1:1995 send-proxy-v2 check port 1110".to_string(),
            check(a),
        ),
        (
            "pop2:1995 send-proxy-v2 check port 1110".to_string(),
            check(b),
        ),
        ("pop1:2424".to_string(), a.lmtp.to_string()),
        ("pop2:2424".to_string(), b.lmtp.to_string()),
        // 20000 connections need ~40000 descriptors, more than a test process may open.
        ("maxconn 20000".to_string(), "maxconn 200".to_string()),
        // Checks every 300 ms instead of 5 s, so the test need not wait.
        ("inter 5s".to_string(), "inter 300ms".to_string()),
    ] {
        assert_eq!(
            cfg.matches(&from).count(),
            1,
            "{from:?} in compose/haproxy.cfg"
        );
        cfg = cfg.replace(&from, &to);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, &cfg).expect("write haproxy.cfg");
    let child = Command::new(haproxy_bin())
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("haproxy.log")).expect("log file"))
        .stderr(std::fs::File::create(dir.path().join("haproxy.err")).expect("log file"))
        .spawn()
        .expect("spawn haproxy");
    HaProxy {
        child,
        _dir: dir,
        pop3,
        pop3s,
        lmtp,
    }
}

/// Logs in through HAProxy once both its checks and the frontends are ready.
fn login_when_up(proxy: &HaProxy) -> Pop3 {
    let addr = proxy.pop3;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = TcpStream::connect(addr) {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut rd = BufReader::new(stream.try_clone().expect("clone"));
            let mut greeting = String::new();
            if rd.read_line(&mut greeting).is_ok() && greeting.starts_with("+OK") {
                // A frontend answers: the probe goes, the real session comes.
                drop((rd, stream));
                let (mut c, greeting) = Pop3::connect_greeting(addr);
                assert!(greeting.starts_with("+OK"), "{greeting}");
                c.cmd(&format!("USER {JOHN}"));
                let r = c.cmd(&format!("PASS {PASSWORD}"));
                assert!(r.starts_with("+OK"), "{r}");
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no frontend up behind HAProxy:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/metrics` of a frontend's admin listener (HTTPS with its self-signed certificate, as the
/// compose config has it), through curl.
fn metrics(server: &Server) -> String {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "10"])
        .arg(format!("https://{}/metrics", server.admin))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn logins_ok(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("pophost_pop3_logins_total{result=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn compose_recipe_runs_two_frontends_behind_haproxy_and_drains_one() {
    // The compose file mounts exactly these files, trusts HAProxy's fixed address, and
    // migrates once before the frontends start with --no-migrate.
    for needle in [
        "./compose/pophost-1.toml:/etc/pophost/pophost.toml:ro",
        "./compose/pophost-2.toml:/etc/pophost/pophost.toml:ro",
        "./compose/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro",
        "ipv4_address: 172.28.0.5",
        "command: [\"migrate\"]",
        "service_completed_successfully",
        "CMD [\"serve\", \"--no-migrate\"]",
    ] {
        let dockerfile = include_str!("../../deploy/Dockerfile");
        assert!(
            COMPOSE.contains(needle) || dockerfile.contains(needle),
            "{needle} not in compose.yaml or Dockerfile"
        );
    }
    let db = Arc::new(pgtest::Database::create());
    // The `migrate` service.
    let migrate = Data::postgres(db.clone()).with_config(&config(POP1));
    let out = migrate.cli(&["migrate"]);
    assert!(out.status.success(), "{}", show(&out));
    // pop1 and pop2.
    let a = Server::spawn(
        Data::postgres(db.clone()).with_config(&config(POP1)),
        &["--no-migrate"],
    );
    let b = Server::spawn(
        Data::postgres(db.clone()).with_config(&config(POP2)),
        &["--no-migrate"],
    );
    a.add_user(JOHN);
    let proxy = haproxy(&a, &b);

    // LMTP through HAProxy.
    let mut c = login_when_up(&proxy);
    c.cmd("QUIT");
    let deadline = Instant::now() + Duration::from_secs(20);
    let replies = loop {
        if let Ok(mut lmtp) = Lmtp::try_connect(proxy.lmtp) {
            break lmtp.deliver("sender@example.net", &[JOHN], &message("via haproxy"));
        }
        assert!(Instant::now() < deadline, "LMTP through HAProxy");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(replies[0].starts_with("250"), "{replies:?}");

    // POP3 through HAProxy: the message is there, whichever frontend answers.
    let mut c = login_when_up(&proxy);
    assert_eq!(c.stat().0, 1);
    c.cmd("QUIT");
    // POP3S through HAProxy (TLS passes through to a frontend), with curl.
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "20", "-u"])
        .arg(format!("{JOHN}:{PASSWORD}"))
        .arg(format!("pop3s://{}/", proxy.pop3s))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("1 "),
        "{}",
        show(&out)
    );

    // The frontends log JSON; sessions show the client from the PROXY header and the proxy.
    let logs = format!(
        "{}{}",
        a.log.lock().expect("log"),
        b.log.lock().expect("log")
    );
    let summary = logs
        .lines()
        .find(|l| l.contains("session summary") && l.contains(JOHN))
        .unwrap_or_else(|| panic!("no session summary:\n{logs}"));
    let v: serde_json::Value = serde_json::from_str(summary).expect("JSON log line");
    assert_eq!(v["span"]["tenant"], "example.com");
    assert!(
        v["span"]["proxy"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{v}"
    );
    // Both frontends' /metrics (HTTPS admin listener) count the logins between them.
    assert!(logins_ok(&metrics(&a)) + logins_ok(&metrics(&b)) >= 3);

    // Rolling restart: drain pop1; logins through HAProxy keep working on pop2.
    let (status, _data) = a.terminate();
    assert!(status.success(), "pop1 exit status {status}");
    for _ in 0..5 {
        let mut c = login_when_up(&proxy);
        assert_eq!(c.stat().0, 1);
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
    drop(proxy);
}

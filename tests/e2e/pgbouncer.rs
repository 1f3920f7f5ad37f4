//! pophost behind PgBouncer (issue 23, "(i)"; Debian's `pgbouncer`, started by the test on a free
//! port in front of the test Postgres): in session mode, with a pool smaller than the load, every
//! delivery and login goes through it and succeeds. Transaction mode does not work with
//! PgBouncer 1.18 (sqlx's named prepared statements; see docs/SCALING.md), so it is not tested.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A PgBouncer process in a temp directory, killed when dropped.
struct Bouncer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Bouncer {
    /// `pool_mode = session` in front of `server` (`postgres://USER@HOST:PORT/…`).
    fn start(server: &str, pool_size: u32) -> Bouncer {
        let bin = Path::new("/usr/sbin/pgbouncer");
        assert!(
            bin.exists(),
            "no {}: install PgBouncer (Debian: apt-get install pgbouncer; scripts/test does)",
            bin.display()
        );
        let rest = server.split_once("://").expect("postgres URL").1;
        let (user, rest) = rest.split_once('@').expect("a user in the Postgres URL");
        let hostport = rest.split(['/', '?']).next().expect("host");
        let (host, pg_port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
        let dir = tempfile::Builder::new()
            .prefix("pophost-pgbouncer-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let d = dir.path().display();
        std::fs::write(dir.path().join("users.txt"), format!("\"{user}\" \"\"\n")).expect("users");
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={host} port={pg_port}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {d}/users.txt\npool_mode = session\n\
                 default_pool_size = {pool_size}\nmax_client_conn = 200\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n"
            ),
        )
        .expect("pgbouncer.ini");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        // PgBouncer refuses to run as root.
        let mut cmd = if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the PgBouncer directory to postgres");
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        let child = cmd
            .arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pgbouncer");
        let bouncer = Bouncer { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PgBouncer did not listen:\n{}",
                bouncer.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }

    fn url(&self, user_url: &str, database: &str) -> String {
        let rest = user_url.split_once("://").expect("postgres URL").1;
        let user = rest.split_once('@').expect("user").0;
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // runuser passes SIGTERM on to PgBouncer.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn session_mode_serves_deliveries_and_logins() {
    let db = Arc::new(pgtest::Database::create());
    // pophost's pool of 3 under 6 LMTP + 6 POP3 clients at once: pophost queues them. In session
    // mode each of its connections keeps a server connection, so PgBouncer's pool must hold
    // those 3 and the `pophost` commands that add the users (else they wait for an idle one to
    // be closed, a minute later).
    let bouncer = Bouncer::start(&pgtest::server_url(), 8);
    let mut data = Data::postgres(db.clone()).with_config("[database]\nmax_connections = 3\n");
    data.database_url = Some(bouncer.url(&db.url, &db.name));
    let server = Server::spawn(data, &[]);
    let users: Vec<String> = (0..6).map(|i| format!("u{i}@example.com")).collect();
    for u in &users {
        server.add_user(u);
    }
    std::thread::scope(|s| {
        for u in &users {
            let server = &server;
            s.spawn(move || {
                for i in 0..5 {
                    deliver(server, u, &message(&format!("m{i}")));
                }
            });
            s.spawn(move || {
                for _ in 0..5 {
                    let mut c = Pop3::login(server.pop3, u);
                    assert!(c.cmd("STAT").starts_with("+OK"));
                    assert!(c.cmd("QUIT").starts_with("+OK"));
                }
            });
        }
    });
    for u in &users {
        let mut c = Pop3::login(server.pop3, u);
        assert_eq!(c.cmd("STAT").split(' ').nth(1), Some("5"), "{u}");
        let (ok, body) = c.fetch("RETR 5");
        assert!(ok.starts_with("+OK"), "{ok}");
        assert!(String::from_utf8_lossy(&body).contains("m4"), "{u}");
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
    // The traffic went through PgBouncer, to this test's database.
    assert!(
        bouncer
            .log()
            .contains(&format!("login attempt: db={}", db.name)),
        "{}",
        bouncer.log()
    );
    let log = server.log.lock().expect("log").clone();
    assert!(!log.contains("prepared statement"), "{log}");
}

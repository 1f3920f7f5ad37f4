//! A real Postgres for tests. `server_url` finds one: `POPHOST_TEST_DATABASE_URL` if set, else a
//! server on 127.0.0.1:5432, else a throwaway cluster started from the installed `initdb` and
//! `pg_ctl` (as the unprivileged `postgres` user when running as root). No Postgres at all is a
//! panic that says how to get one, never a silent skip. `Database::create` gives each test a
//! database of its own, dropped afterwards; `Cluster` is a private server a test may restart;
//! `ReplicatedPair` a primary with a synchronous standby to fail over to, behind `Haproxy`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// URL of a Postgres server for tests, ending in a database name that exists (`postgres`).
pub fn server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("POPHOST_TEST_DATABASE_URL")
            && !url.is_empty()
        {
            return url;
        }
        if TcpStream::connect_timeout(
            &"127.0.0.1:5432".parse().expect("addr"),
            Duration::from_secs(1),
        )
        .is_ok()
        {
            return "postgres://postgres@127.0.0.1:5432/postgres".into();
        }
        // Kept for the life of the test process.
        let cluster = Box::leak(Box::new(Cluster::start()));
        cluster.url("postgres")
    })
    .clone()
}

/// Replaces the database name of a `postgres://…/name[?params]` URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, params) = url
        .split_once('?')
        .map_or((url, None), |(b, p)| (b, Some(p)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match params {
        Some(p) => format!("{server}/{name}?{p}"),
        None => format!("{server}/{name}"),
    }
}

fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql (install postgresql-client): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A database of its own for one test, on `server_url()`; dropped with the value.
pub struct Database {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl Database {
    pub fn create() -> Database {
        Database::create_on(&server_url())
    }

    pub fn create_on(server: &str) -> Database {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pophost_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin_url = server.to_string();
        if let Err(e) = psql(&admin_url, &format!("CREATE DATABASE {name}")) {
            panic!(
                "cannot create a test database on {admin_url}: {e}\n\
                 The Postgres tests need a server: set POPHOST_TEST_DATABASE_URL, start one on \
                 127.0.0.1:5432 (trust auth), or install the server binaries (initdb, pg_ctl)."
            );
        }
        let url = with_database(server, &name);
        Database {
            admin_url,
            name,
            url,
        }
    }

    /// Runs SQL in this database and returns the result rows as text.
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A private Postgres server in a temp directory, stopped when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = pg_bin().unwrap_or_else(|| {
            panic!(
                "no Postgres for the tests: POPHOST_TEST_DATABASE_URL is unset, nothing listens on \
                 127.0.0.1:5432, and no initdb was found under /usr/lib/postgresql. Install the \
                 server (Debian: apt-get install postgresql) or point POPHOST_TEST_DATABASE_URL at one."
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("pophost-pg-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        if is_root() {
            // initdb refuses to run as root.
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        run(as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data));
        let port = free_port();
        let cluster = Cluster { dir, port, bin };
        cluster.pg_ctl(&["start", "-w", "-t", "60"]);
        cluster
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// `pg_ctl restart -m immediate`: a crash-like stop (no checkpoint), then a start.
    pub fn restart_immediate(&self) {
        self.pg_ctl(&["restart", "-m", "immediate", "-w", "-t", "60"]);
    }

    pub fn stop_immediate(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-w", "-t", "60"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("postgres.log");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run(as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts])
            .args(args));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A primary and a synchronous streaming standby on loopback, for failover tests: `kill_primary`
/// (kill -9 of the postmaster and all its children, as a lost machine), `promote` (the standby
/// becomes the primary, running alone until `add_standby` gives it a new synchronous standby,
/// built with `pg_basebackup -R` from it). Every node lives in one temp directory; all are
/// killed when dropped.
pub struct ReplicatedPair {
    root: tempfile::TempDir,
    bin: PathBuf,
    next: u32,
    pub primary: Node,
    pub standby: Option<Node>,
}

/// One server of a `ReplicatedPair`.
pub struct Node {
    pub port: u16,
    dir: PathBuf,
}

impl Node {
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The postmaster's pid, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl ReplicatedPair {
    /// A primary (initdb) with a standby in synchronous replication: a commit is acknowledged
    /// only once the standby has it.
    pub fn start() -> ReplicatedPair {
        let bin = pg_bin().expect("no Postgres server binaries under /usr/lib/postgresql");
        let root = tempfile::Builder::new()
            .prefix("pophost-pgha-")
            .tempdir()
            .expect("tempdir");
        if is_root() {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(root.path()));
        }
        let dir = root.path().join("n0");
        std::fs::create_dir(&dir).expect("mkdir");
        if is_root() {
            run(Command::new("chown").args(["postgres:postgres"]).arg(&dir));
        }
        let primary = Node {
            port: free_port(),
            dir,
        };
        run(as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(primary.data()));
        let mut pair = ReplicatedPair {
            root,
            bin,
            next: 1,
            primary,
            standby: None,
        };
        pair.pg_ctl(&pair.primary, &["start", "-w", "-t", "60"]);
        pair.add_standby();
        pair
    }

    pub fn url(&self, database: &str) -> String {
        self.primary.url(database)
    }

    /// Builds a standby from the primary (`pg_basebackup -R -X stream`), starts it, then makes
    /// it synchronous (`synchronous_standby_names = '*'` on the primary) and waits until the
    /// primary reports it `sync`.
    pub fn add_standby(&mut self) {
        assert!(self.standby.is_none(), "a standby is running already");
        let dir = self.root.path().join(format!("n{}", self.next));
        self.next += 1;
        std::fs::create_dir(&dir).expect("mkdir");
        if is_root() {
            run(Command::new("chown").args(["postgres:postgres"]).arg(&dir));
        }
        let standby = Node {
            port: free_port(),
            dir,
        };
        run(as_postgres(&self.bin.join("pg_basebackup"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "stream", "-R"])
            .args(["-c", "fast", "--no-sync", "-p"])
            .arg(self.primary.port.to_string())
            .arg("-D")
            .arg(standby.data()));
        self.pg_ctl(&standby, &["start", "-w", "-t", "60"]);
        self.standby = Some(standby);
        let primary = self.url("postgres");
        psql(&primary, "ALTER SYSTEM SET synchronous_standby_names = '*'")
            .expect("set synchronous_standby_names");
        psql(&primary, "SELECT pg_reload_conf()").expect("reload");
        let start = std::time::Instant::now();
        while psql(
            &primary,
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
        )
        .as_deref()
            != Ok("1")
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the standby did not become synchronous"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9 of the primary's postmaster and every process it started, at once.
    pub fn kill_primary(&self) {
        let pid = self
            .primary
            .postmaster_pid()
            .expect("primary's postmaster.pid");
        let mut pids = vec![pid.to_string()];
        pids.extend(children(pid).iter().map(u32::to_string));
        let _ = Command::new("kill")
            .arg("-9")
            .args(&pids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// `pg_ctl promote` of the standby (waiting until it accepts writes); it becomes the
    /// primary, running alone (`synchronous_standby_names` reset) until `add_standby`. The old
    /// primary's directory is removed.
    pub fn promote(&mut self) {
        let standby = self.standby.take().expect("no standby to promote");
        self.pg_ctl(&standby, &["promote", "-w", "-t", "60"]);
        let old = std::mem::replace(&mut self.primary, standby);
        let url = self.url("postgres");
        psql(&url, "ALTER SYSTEM RESET synchronous_standby_names").expect("reset");
        psql(&url, "SELECT pg_reload_conf()").expect("reload");
        // Whatever of the killed primary is left (it was killed with -9) goes.
        if let Some(pid) = old.postmaster_pid() {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&old.dir);
    }

    fn pg_ctl(&self, node: &Node, args: &[&str]) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            node.port,
            node.dir.display()
        );
        run(as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(node.data())
            .arg("-l")
            .arg(node.dir.join("postgres.log"))
            .args(["-o", &opts])
            .args(args));
    }
}

impl Drop for ReplicatedPair {
    fn drop(&mut self) {
        for node in std::iter::once(&self.primary).chain(self.standby.as_ref()) {
            let _ = as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(node.data())
                .args(["stop", "-m", "immediate"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The pids whose parent is `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// HAProxy as a TCP proxy to one Postgres server, repointed through its runtime API (the
/// stats socket): `set server pg/db addr 127.0.0.1 port N`, no reload. Killed when dropped.
pub struct Haproxy {
    child: std::process::Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Haproxy {
    pub fn start(backend_port: u16) -> Haproxy {
        let dir = tempfile::Builder::new()
            .prefix("pophost-haproxy-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let config = format!(
            "global\n  stats socket {sock} mode 600 level admin\n  maxconn 2000\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n  retries 1\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend pg\n\
             backend pg\n  server db 127.0.0.1:{backend_port}\n",
            sock = dir.path().join("admin.sock").display()
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run haproxy (Debian: apt-get install haproxy)");
        let proxy = Haproxy { child, dir, port };
        let start = std::time::Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || !proxy.dir.path().join("admin.sock").exists()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "haproxy did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// One runtime API command; its answer.
    pub fn command(&self, line: &str) -> String {
        use std::io::{Read, Write};
        let mut sock = std::os::unix::net::UnixStream::connect(self.dir.path().join("admin.sock"))
            .expect("haproxy stats socket");
        sock.write_all(format!("{line}\n").as_bytes())
            .expect("write to haproxy");
        let mut answer = String::new();
        let _ = sock.read_to_string(&mut answer);
        answer.trim().to_string()
    }

    /// Ends the connections still open to the old server, then sends new ones to `port`.
    pub fn repoint(&self, port: u16) {
        self.command("shutdown sessions server pg/db");
        let answer = self.command(&format!("set server pg/db addr 127.0.0.1 port {port}"));
        assert!(
            answer.contains("changed") || answer.contains("no need to change"),
            "haproxy: {answer}"
        );
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run postgres tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }

    /// A commit through the proxy survives kill -9 of the primary, promotion and repointing;
    /// the new primary takes a new synchronous standby.
    #[test]
    fn a_replicated_pair_fails_over_behind_haproxy() {
        let mut pair = ReplicatedPair::start();
        let proxy = Haproxy::start(pair.primary.port);
        let url = proxy.url("postgres");
        psql(&url, "CREATE TABLE t (x INT); INSERT INTO t VALUES (1)").expect("insert");
        pair.kill_primary();
        assert!(psql(&url, "SELECT 1").is_err(), "the primary still answers");
        pair.promote();
        proxy.repoint(pair.primary.port);
        assert_eq!(psql(&url, "SELECT sum(x) FROM t").as_deref(), Ok("1"));
        pair.add_standby();
        psql(&url, "INSERT INTO t VALUES (2)").expect("insert after failover");
        pair.kill_primary();
        pair.promote();
        proxy.repoint(pair.primary.port);
        assert_eq!(psql(&url, "SELECT sum(x) FROM t").as_deref(), Ok("3"));
    }
}

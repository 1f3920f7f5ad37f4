//! A real Postgres for tests. `server_url` finds one: `POPHOST_TEST_DATABASE_URL` if set, else a
//! server on 127.0.0.1:5432, else a throwaway cluster started from the installed `initdb` and
//! `pg_ctl` (as the unprivileged `postgres` user when running as root). No Postgres at all is a
//! panic that says how to get one, never a silent skip. `Database::create` gives each test a
//! database of its own, dropped afterwards; `Cluster` is a private server a test may restart.

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
}

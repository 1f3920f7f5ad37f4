//! Starting servers and talking to them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_pophost");
pub const PASSWORD: &str = "s3cret pass";

/// `pophost serve` with every listener on an ephemeral loopback port.
const SERVE: [&str; 9] = [
    "serve",
    "--pop3-listen",
    "127.0.0.1:0",
    "--pop3s-listen",
    "127.0.0.1:0",
    "--lmtp-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

/// Where a server keeps its data: a temp directory, plus a Postgres database of its own when
/// `POPHOST_TEST_BACKEND=postgres` (or when asked for one), and an optional config file.
pub struct Data {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub database_url: Option<String>,
    _pg: Option<Arc<pgtest::Database>>,
    config: Option<PathBuf>,
}

impl Data {
    /// The backend the suite runs on: SQLite unless `POPHOST_TEST_BACKEND=postgres`.
    pub fn new() -> Data {
        match std::env::var("POPHOST_TEST_BACKEND").as_deref() {
            Ok("postgres") => Data::postgres(Arc::new(pgtest::Database::create())),
            Ok("sqlite") | Err(_) => Data::sqlite(),
            Ok(other) => panic!("POPHOST_TEST_BACKEND={other}: expected sqlite or postgres"),
        }
    }

    pub fn sqlite() -> Data {
        let tmp = tempfile::tempdir().expect("tempdir");
        Data {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
            database_url: None,
            _pg: None,
            config: None,
        }
    }

    /// On `db`, which several frontends may share.
    pub fn postgres(db: Arc<pgtest::Database>) -> Data {
        Data {
            database_url: Some(db.url.clone()),
            _pg: Some(db),
            ..Data::sqlite()
        }
    }

    /// Adds a config file holding `toml`. Unless it has an `[auth]` table of its own, failed
    /// logins are not slowed down (the production defaults wait seconds; see tests/e2e/defence.rs).
    pub fn with_config(mut self, toml: &str) -> Data {
        let path = self.dir.join("pophost.toml");
        let mut toml = toml.to_string();
        if !toml.lines().any(|l| l.trim() == "[auth]") {
            toml.push_str("\n[auth]\nfailure_delay_ms = 0\nip_penalty_max_secs = 0\n");
        }
        std::fs::write(&path, toml).expect("write config");
        self.config = Some(path);
        self
    }

    /// `pophost` with this data's directory, database and config.
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--data-dir").arg(&self.dir);
        if let Some(config) = &self.config {
            c.arg("--config").arg(config);
        }
        c.env_remove("POPHOST_CONFIG")
            .env_remove("POPHOST_DATABASE_URL");
        if let Some(url) = &self.database_url {
            c.env("POPHOST_DATABASE_URL", url);
        }
        c
    }

    /// Runs a `pophost` subcommand on this data.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run pophost")
    }

    /// One value from SQL run directly against the store, as text.
    pub fn sql(&self, query: &str) -> String {
        let out = match &self.database_url {
            Some(url) => Command::new("psql")
                .args([url.as_str(), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", query])
                .output(),
            None => Command::new("python3")
                .args([
                    "-c",
                    "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); r=c.execute(sys.argv[2]).fetchone(); c.commit(); print('' if r is None else r[0])",
                ])
                .arg(self.dir.join("pophost.db"))
                .arg(query)
                .output(),
        }
        .expect("run SQL client");
        assert!(
            out.status.success(),
            "{query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A `pophost serve` process, listening on ephemeral ports.
pub struct Server {
    child: Child,
    data: Option<Data>,
    pub pop3: SocketAddr,
    /// POP3S (implicit TLS).
    pub pop3s: SocketAddr,
    pub lmtp: SocketAddr,
    /// The admin UI and API.
    pub admin: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start() -> Server {
        Server::spawn(Data::new(), &[])
    }

    /// Starts with a config file holding `toml`.
    pub fn start_with_config(toml: &str) -> Server {
        Server::spawn(Data::new().with_config(toml), &[])
    }

    /// Starts `pophost serve` on `data`; `extra` goes after `serve`.
    pub fn spawn(data: Data, extra: &[&str]) -> Server {
        Server::spawn_env(data, extra, &[])
    }

    /// `spawn` with environment variables of its own (`RUST_LOG` is `info` unless given).
    pub fn spawn_env(data: Data, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let data = match data.config {
            Some(_) => data,
            None => data.with_config(""),
        };
        // `extra` may choose a listener's address itself (clap refuses a flag given twice).
        let mut serve = vec![SERVE[0]];
        for pair in SERVE[1..].chunks(2) {
            if !extra.contains(&pair[0]) {
                serve.extend_from_slice(pair);
            }
        }
        let mut child = data
            .command()
            .args(serve)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pophost");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for (key, proto) in [
                    ("POP3 listening", "pop3"),
                    ("POP3S listening", "pop3s"),
                    ("LMTP listening", "lmtp"),
                    ("admin UI listening", "admin"),
                ] {
                    // `addr=…` in human-format logs, `"addr":"…"` in JSON ones.
                    if line.contains(key)
                        && let Some(addr) = line
                            .split("addr=")
                            .nth(1)
                            .or_else(|| line.split("\"addr\":\"").nth(1))
                        && let Some(addr) = addr.split([' ', '"']).next()
                        && let Ok(addr) = addr.parse::<SocketAddr>()
                    {
                        let _ = tx.send((proto, addr));
                    }
                }
                sink.lock().expect("log").push_str(&(line + "\n"));
            }
        });
        let (mut pop3, mut pop3s, mut lmtp, mut admin) = (None, None, None, None);
        while pop3.is_none() || pop3s.is_none() || lmtp.is_none() || admin.is_none() {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(("pop3", a)) => pop3 = Some(a),
                Ok(("pop3s", a)) => pop3s = Some(a),
                Ok(("admin", a)) => admin = Some(a),
                Ok((_, a)) => lmtp = Some(a),
                Err(_) => panic!("server did not start:\n{}", log.lock().expect("log")),
            }
        }
        Server {
            child,
            data: Some(data),
            pop3: pop3.expect("pop3"),
            pop3s: pop3s.expect("pop3s"),
            lmtp: lmtp.expect("lmtp"),
            admin: admin.expect("admin"),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data(&self) -> &Data {
        self.data.as_ref().expect("data")
    }

    /// Runs a `pophost` subcommand against this server's store.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.data().cli(args)
    }

    /// Runs a `pophost` subcommand with `stdin` on its standard input.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .data()
            .command()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run pophost");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("pophost output")
    }

    /// The `password_scheme` of `pophost user show ADDRESS --json`.
    pub fn password_scheme(&self, address: &str) -> String {
        let out = self.cli(&["user", "show", address, "--json"]);
        assert!(out.status.success(), "{}", show(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json["password_scheme"]
            .as_str()
            .expect("scheme")
            .to_string()
    }

    /// AUTH PLAIN with an initial response, then QUIT; the reply to AUTH.
    pub fn auth_plain(&self, user: &str, password: &str) -> String {
        use base64::Engine;
        let mut c = Pop3::connect(self.pop3);
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let reply = c.cmd(&format!("AUTH PLAIN {token}"));
        c.send("QUIT");
        reply
    }

    /// Creates the user (and its domain, if new) with `PASSWORD`.
    pub fn add_user(&self, address: &str) {
        let domain = address.rsplit('@').next().expect("domain");
        let _ = self.cli(&["domain", "add", domain]);
        let out = self.cli(&["user", "add", address, "--password", PASSWORD]);
        assert!(
            out.status.success(),
            "user add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kill -9; the data stays for `restart`.
    pub fn kill9(mut self) -> Data {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data.take().expect("data")
    }

    /// SIGTERM, then wait for the process to exit; the data stays for `restart`.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Data) {
        signal(self.child.id(), "TERM");
        let status = self.child.wait().expect("wait");
        (status, self.data.take().expect("data"))
    }

    /// A new server on the data of a stopped one.
    pub fn restart(data: Data) -> Server {
        Server::spawn(data, &[])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on, for a server that must be told its port up front.
///
/// Taken below the kernel's ephemeral range (32768–60999 by default): a port the kernel handed
/// out for `:0` would be handed out again, to another test's listener or to any outgoing
/// connection's local end, between this check and the server's bind. Each test process starts
/// at its own offset and never returns a port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() * 997) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free loopback port below the ephemeral range");
        let port = (FIRST + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// Runs a `pophost` subcommand on the SQLite store in `dir`.
pub fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("POPHOST_CONFIG")
        .env_remove("POPHOST_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run pophost")
}

/// A raw POP3 connection.
pub struct Pop3 {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
}

impl Pop3 {
    pub fn connect(addr: SocketAddr) -> Pop3 {
        Pop3::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// A connection already made (e.g. after writing a PROXY header); reads the greeting.
    pub fn from_stream(stream: TcpStream) -> Pop3 {
        let (c, greeting) = Pop3::open(stream);
        assert!(greeting.starts_with("+OK"), "{greeting}");
        c
    }

    /// As `connect`, also returning the greeting line (which may or may not be `+OK`).
    pub fn connect_greeting(addr: SocketAddr) -> (Pop3, String) {
        Pop3::open(TcpStream::connect(addr).expect("connect"))
    }

    fn open(stream: TcpStream) -> (Pop3, String) {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut c = Pop3 {
            rd: BufReader::new(stream.try_clone().expect("clone")),
            wr: stream,
        };
        let greeting = c.line();
        (c, greeting)
    }

    pub fn login(addr: SocketAddr, user: &str) -> Pop3 {
        let mut c = Pop3::connect(addr);
        assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
        let r = c.cmd(&format!("PASS {PASSWORD}"));
        assert!(r.starts_with("+OK"), "login {user}: {r}");
        c
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// One reply line without its CRLF; fails on a bare LF.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.rd.read_until(b'\n', &mut buf).expect("read");
        assert!(
            buf.ends_with(b"\r\n"),
            "reply not CRLF-terminated: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).expect("utf8 reply")
    }

    /// The next reply line, or `None` if the connection ended first (the server was killed).
    pub fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        self.rd.read_until(b'\n', &mut buf).ok()?;
        let line = buf.strip_suffix(b"\r\n")?;
        Some(String::from_utf8_lossy(line).to_string())
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// CAPA's lines: valid in either state, so it shows the session goes on (NOOP is valid
    /// only after login).
    pub fn capa(&mut self) -> Vec<String> {
        let status = self.cmd("CAPA");
        assert!(status.starts_with("+OK"), "CAPA: {status}");
        self.multi()
    }

    /// The rest of a multi-line reply as sent (still dot-stuffed), including the final ".\r\n".
    pub fn multi_raw(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let start = all.len();
            let n = self.rd.read_until(b'\n', &mut all).expect("read");
            assert!(n > 0, "EOF inside a multi-line reply");
            if &all[start..] == b".\r\n" {
                return all;
            }
        }
    }

    /// The lines of a multi-line reply, un-stuffed, without the terminator.
    pub fn multi(&mut self) -> Vec<String> {
        let raw = self.multi_raw();
        let text = String::from_utf8_lossy(&raw[..raw.len() - 3]).to_string();
        text.split_terminator("\r\n")
            .map(|l| l.strip_prefix('.').unwrap_or(l).to_string())
            .collect()
    }

    /// Sends a command expecting a multi-line reply; returns (status line, body bytes un-stuffed).
    pub fn fetch(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.cmd(line);
        if !status.starts_with("+OK") {
            return (status, Vec::new());
        }
        (status, unstuff(&self.multi_raw()))
    }

    /// Sends `line` and returns the reply line, or `None` if the connection ended instead.
    pub fn try_line_after(&mut self, line: &str) -> Option<String> {
        self.wr.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        self.try_line()
    }

    /// STAT as (message count, octets).
    pub fn stat(&mut self) -> (usize, u64) {
        let r = self.cmd("STAT");
        let mut it = r.strip_prefix("+OK ").expect("STAT +OK").split(' ');
        let count = it.next().and_then(|n| n.parse().ok()).expect("count");
        let size = it.next().and_then(|n| n.parse().ok()).expect("size");
        (count, size)
    }

    /// Everything the server sends until it closes the connection.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        self.rd.read_to_end(&mut all).expect("read to the end");
        all
    }

    /// True when the server closed the connection (reads EOF).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.rd.read(&mut b), Ok(0) | Err(_))
    }
}

/// Reverses dot-stuffing and drops the final ".\r\n".
pub fn unstuff(wire: &[u8]) -> Vec<u8> {
    let body = wire.strip_suffix(b".\r\n").expect("terminator");
    let mut out = Vec::with_capacity(body.len());
    let mut bol = true;
    for &b in body {
        if !(bol && b == b'.') {
            out.push(b);
        }
        bol = b == b'\n';
    }
    out
}

/// A raw LMTP connection.
pub struct Lmtp {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
}

impl Lmtp {
    pub fn connect(addr: SocketAddr) -> Lmtp {
        Lmtp::try_connect(addr).expect("LMTP connect")
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Lmtp> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut c = Lmtp {
            rd: BufReader::new(stream.try_clone()?),
            wr: stream,
        };
        assert!(c.try_reply()?.starts_with("220"));
        Ok(c)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// One (possibly multi-line) reply, lines joined by '\n'.
    pub fn reply(&mut self) -> String {
        self.try_reply().expect("LMTP reply")
    }

    fn try_reply(&mut self) -> std::io::Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.rd.read_line(&mut line)?;
            if !line.ends_with("\r\n") {
                return Err(std::io::Error::other(format!(
                    "bad reply line {line:?} after {all:?}"
                )));
            }
            all.push_str(line.trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(all);
            }
            all.push('\n');
        }
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.reply()
    }

    fn try_cmd(&mut self, line: &str) -> std::io::Result<String> {
        self.wr.write_all(format!("{line}\r\n").as_bytes())?;
        self.try_reply()
    }

    /// One whole transaction; returns the per-recipient replies after DATA (or the DATA reply
    /// when it was refused).
    pub fn deliver(&mut self, from: &str, rcpts: &[&str], message: &[u8]) -> Vec<String> {
        self.try_deliver(from, rcpts, message)
            .expect("LMTP transaction")
    }

    /// `deliver` for a server that may die mid-transaction.
    pub fn try_deliver(
        &mut self,
        from: &str,
        rcpts: &[&str],
        message: &[u8],
    ) -> std::io::Result<Vec<String>> {
        assert!(self.try_cmd("LHLO test.example")?.starts_with("250"));
        assert!(
            self.try_cmd(&format!("MAIL FROM:<{from}>"))?
                .starts_with("250")
        );
        let mut accepted = 0;
        for r in rcpts {
            if self.try_cmd(&format!("RCPT TO:<{r}>"))?.starts_with("250") {
                accepted += 1;
            }
        }
        let data = self.try_cmd("DATA")?;
        if !data.starts_with("354") {
            return Ok(vec![data]);
        }
        self.wr.write_all(&stuff(message))?;
        (0..accepted).map(|_| self.try_reply()).collect()
    }
}

/// Dot-stuffs a message for DATA and appends the terminator (adding a CRLF if missing).
pub fn stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut bol = true;
    for &b in message {
        if bol && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        bol = b == b'\n';
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Delivers `message` to `rcpt` and asserts it was accepted.
pub fn deliver(server: &Server, rcpt: &str, message: &[u8]) {
    let replies = Lmtp::connect(server.lmtp).deliver("sender@example.net", &[rcpt], message);
    assert_eq!(replies.len(), 1);
    assert!(replies[0].starts_with("250 2.0.0"), "{replies:?}");
}

/// Fills `rcpt`'s mailbox with `n` small messages at once (`pophost import mbox`), for tests
/// of large maildrops; LMTP would take minutes for tens of thousands.
pub fn import_messages(server: &Server, rcpt: &str, n: usize) {
    let mut mbox = Vec::new();
    for i in 1..=n {
        mbox.extend_from_slice(b"From sender@example.net Mon Dec  7 00:00:00 2026\n");
        mbox.extend_from_slice(&message(&format!("msg{i}")));
        mbox.extend_from_slice(b"\n");
    }
    let path = server.data().dir.join(format!("import-{n}.mbox"));
    std::fs::write(&path, mbox).expect("write mbox");
    let path = path.to_str().expect("utf-8 path");
    let out = server.cli(&["import", "mbox", path, "--user", rcpt]);
    assert!(out.status.success(), "import: {}", show(&out));
}

/// A small message with a recognisable subject.
pub fn message(subject: &str) -> Vec<u8> {
    format!("From: a@example.net\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n.leading dot\r\nlast line\r\n")
        .into_bytes()
}

/// Writes a client config file with mode 0600 (fetchmail and mpop refuse readable password files).
pub fn write_private(path: &Path, contents: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A client run's exit status and output, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An HTTP/1.1 response as the tests look at it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value a `Set-Cookie` of this response gives `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.split(';').next()?.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// The `value` of the hidden input `name` in the body.
    pub fn hidden(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\" value=\""))?;
        let rest = &self.body[at + name.len() + 15..];
        Some(rest[..rest.find('"')?].to_string())
    }
}

/// One request on a fresh connection (`Connection: close`), over plain HTTP.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect to the admin UI");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    HttpResponse {
        status,
        headers,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A signed-in admin UI session over plain HTTP: the cookie and the CSRF token of its forms.
pub struct AdminHttp {
    pub addr: SocketAddr,
    pub cookie: String,
    pub csrf: String,
}

impl AdminHttp {
    /// Signs in through the real form (its double-submit token included).
    pub fn sign_in(addr: SocketAddr, email: &str, password: &str) -> AdminHttp {
        let res = submit_sign_in(addr, "/signin", email, password);
        assert_eq!(res.status, 303, "sign-in refused: {}", res.body);
        let cookie = res
            .cookie("__Host-pophost-session")
            .expect("session cookie");
        let mut admin = AdminHttp {
            addr,
            cookie,
            csrf: String::new(),
        };
        admin.csrf = admin
            .get("/")
            .hidden("_csrf")
            .expect("csrf on the dashboard");
        admin
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http(self.addr, "GET", path, &[("Cookie", &self.session())], "")
    }

    /// A form POST with this session's CSRF token.
    pub fn post(&self, path: &str, fields: &[(&str, &str)]) -> HttpResponse {
        let mut fields = fields.to_vec();
        fields.push(("_csrf", &self.csrf));
        http(
            self.addr,
            "POST",
            path,
            &[
                ("Cookie", &self.session()),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &form_body(&fields),
        )
    }

    fn session(&self) -> String {
        format!("__Host-pophost-session={}", self.cookie)
    }
}

/// Opens the sign-in form at `path` (`/signin`, or a bootstrap link) and submits it as a browser
/// would: with the double-submit cookie and field the form came with.
pub fn submit_sign_in(addr: SocketAddr, path: &str, email: &str, password: &str) -> HttpResponse {
    let form = http(addr, "GET", path, &[], "");
    let pre = form.cookie("__Host-pophost-pre").expect("pre cookie");
    http(
        addr,
        "POST",
        path,
        &[
            ("Cookie", &format!("__Host-pophost-pre={pre}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form_body(&[
            ("email", email),
            ("password", password),
            ("_pre", &form.hidden("_pre").expect("_pre field")),
        ]),
    )
}

/// `application/x-www-form-urlencoded`.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Runs `pophost serve` through `command` (a `Data::command()`) on ephemeral ports, expecting
/// it to refuse to start: its output once it has exited; a panic if it still runs after `limit`.
pub fn serve_refused(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .args(SERVE)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pophost");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "pophost serve still running after {limit:?}: {}",
                show(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// An LMTP delivery stopped mid-DATA with its body partly written to the store (a ~300 KB
/// message, several store chunks).
pub struct DataInFlight {
    lmtp: Lmtp,
    rest: Vec<u8>,
}

impl DataInFlight {
    /// Sends all but the end of a message to `rcpt`; returns once a pending body is stored.
    pub fn start(server: &Server, rcpt: &str) -> DataInFlight {
        let mut lmtp = Lmtp::connect(server.lmtp);
        assert!(lmtp.cmd("LHLO test.example").starts_with("250"));
        assert!(lmtp.cmd("MAIL FROM:<a@b.example>").starts_with("250"));
        assert!(lmtp.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
        assert!(lmtp.cmd("DATA").starts_with("354"));
        let mut body = b"Subject: in flight\r\n\r\n".to_vec();
        for i in 0..4000 {
            body.extend_from_slice(
                format!("line {i:05} of a message in flight ......\r\n").as_bytes(),
            );
        }
        let rest = body.split_off(body.len() - 1000);
        lmtp.send_raw(&body);
        let pending = "SELECT count(*) FROM blobs WHERE pending_node IS NOT NULL";
        let start = std::time::Instant::now();
        while server.data().sql(pending) == "0" {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no pending body stored"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        DataInFlight { lmtp, rest }
    }

    /// Sends the rest of the message; the reply.
    pub fn finish(mut self) -> String {
        self.rest.extend_from_slice(b".\r\n");
        self.lmtp.send_raw(&self.rest);
        self.lmtp.reply()
    }
}

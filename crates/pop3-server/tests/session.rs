//! The session state machine over TCP, without the binary: `pop3_server::run` on 127.0.0.1:0
//! with a real SQLite store in a temp dir and a real `tenancy::Authenticator`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mailstore::{
    Address, Directory, DomainName, ImportMessage, LockOptions, Maildrops, Policies, SqliteStore,
};
use tenancy::{AuthPolicy, Authenticator, DefaultDomains};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

const JOHN: &str = "john@example.com";
const PASSWORD: &str = "s3cret pass";
/// A reply that takes longer than this is a hang, not a slow machine.
const REPLY_WITHIN: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    store: Arc<SqliteStore>,
    _shutdown: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

/// A server with `JOHN` and two messages in his maildrop.
async fn start() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pophost.db");
    let store = SqliteStore::open(&path, LockOptions::default(), true)
        .await
        .expect("open store");
    let store = Arc::new(store);
    let domain = DomainName::parse("example.com").expect("domain");
    store.add_domain(&domain).await.expect("add domain");
    let hash = tenancy::hash_password(PASSWORD.as_bytes()).expect("hash");
    let address = Address::parse(JOHN).expect("address");
    let user = store
        .add_user(&address, &hash, None)
        .await
        .expect("add user");
    let messages: Vec<ImportMessage> = ["one", "two"]
        .iter()
        .map(|subject| ImportMessage {
            key: subject.to_string(),
            uid: None,
            data: format!("Subject: {subject}\r\n\r\nbody {subject}\r\n").into_bytes(),
        })
        .collect();
    store.import(user, &messages).await.expect("import");
    // No failure delay: a wrong password is answered at once.
    let policy = AuthPolicy {
        failure_delay: Duration::ZERO,
        ..AuthPolicy::default()
    };
    let auth = Authenticator::new(store.clone(), 2, DefaultDomains::default(), policy)
        .expect("authenticator");
    let services = pop3_server::Services {
        maildrops: store.clone(),
        policies: store.clone(),
        auth: Arc::new(auth),
        tls: None,
        apop: None,
        traces: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let config = pop3_server::Config::default();
    tokio::spawn(pop3_server::run(
        listener,
        services,
        config,
        shutdown.clone(),
    ));
    Server {
        addr,
        store,
        _shutdown: shutdown.drop_guard(),
        _dir: dir,
    }
}

struct Client {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (rd, wr) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        let mut c = Client {
            rd: BufReader::new(rd),
            wr,
        };
        let greeting = c.line().await;
        assert!(greeting.starts_with("+OK pophost ready"), "{greeting}");
        c
    }

    async fn login(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr).await;
        assert!(c.cmd(&format!("USER {JOHN}")).await.starts_with("+OK"));
        let r = c.cmd(&format!("PASS {PASSWORD}")).await;
        assert!(r.starts_with("+OK"), "{r}");
        c
    }

    async fn send(&mut self, bytes: &str) {
        self.wr.write_all(bytes.as_bytes()).await.expect("write");
    }

    /// One reply line without its CRLF; `None` once the server has closed the connection.
    async fn read(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(REPLY_WITHIN, self.rd.read_line(&mut line))
            .await
            .expect("a reply in time")
            .expect("read");
        (n > 0).then(|| line.trim_end_matches("\r\n").to_owned())
    }

    async fn line(&mut self) -> String {
        self.read()
            .await
            .expect("a reply, not the end of the connection")
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.line().await
    }

    /// The lines of a multi-line reply after its status line, up to the "." that ends it.
    async fn multi(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.line().await.as_str() {
                "." => return lines,
                l => lines.push(l.to_owned()),
            }
        }
    }

    async fn closed(&mut self) -> bool {
        self.read().await.is_none()
    }
}

/// How many messages `JOHN`'s maildrop holds in the store.
async fn stored(server: &Server) -> usize {
    let address = Address::parse(JOHN).expect("address");
    let user = server
        .store
        .find_user(&address)
        .await
        .expect("find user")
        .expect("user");
    server.store.list(user.id).await.expect("list").len()
}

/// Logs in once the maildrop is free: a session that just went away gives its lock back
/// after the disconnect is noticed.
async fn login_when_free(addr: SocketAddr) -> Client {
    let deadline = tokio::time::Instant::now() + REPLY_WITHIN;
    loop {
        let mut c = Client::connect(addr).await;
        c.cmd(&format!("USER {JOHN}")).await;
        let r = c.cmd(&format!("PASS {PASSWORD}")).await;
        if r.starts_with("+OK") {
            return c;
        }
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        assert!(tokio::time::Instant::now() < deadline, "still locked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn user_and_pass_enter_transaction() {
    let s = start().await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd(&format!("USER {JOHN}")).await, "+OK send PASS");
    let r = c.cmd(&format!("PASS {PASSWORD}")).await;
    assert!(r.starts_with("+OK 2 messages ("), "{r}");
    assert!(c.cmd("STAT").await.starts_with("+OK 2 "));
    assert!(c.cmd("RETR 2").await.starts_with("+OK"));
    assert_eq!(c.multi().await, ["Subject: two", "", "body two"]);
    assert_eq!(
        c.cmd("QUIT").await,
        "+OK pophost signing off (2 messages left)"
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_read_the_same() {
    let s = start().await;
    let mut c = Client::connect(s.addr).await;
    c.cmd(&format!("USER {JOHN}")).await;
    let wrong = c.cmd("PASS not it").await;
    assert_eq!(wrong, "-ERR [AUTH] invalid login or password");
    c.cmd("USER nobody@example.com").await;
    assert_eq!(c.cmd(&format!("PASS {PASSWORD}")).await, wrong);
    // Still in AUTHORIZATION: a login goes on to work.
    c.cmd(&format!("USER {JOHN}")).await;
    assert!(c.cmd(&format!("PASS {PASSWORD}")).await.starts_with("+OK"));
}

#[tokio::test]
async fn commands_in_the_wrong_state_are_refused() {
    let s = start().await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd("STAT").await, "-ERR command not valid before login");
    assert_eq!(c.cmd("PASS x").await, "-ERR send USER first");
    c.cmd(&format!("USER {JOHN}")).await;
    assert!(c.cmd(&format!("PASS {PASSWORD}")).await.starts_with("+OK"));
    assert_eq!(
        c.cmd(&format!("USER {JOHN}")).await,
        "-ERR already logged in"
    );
    assert_eq!(c.cmd("AUTH PLAIN").await, "-ERR already logged in");
    assert_eq!(c.cmd("STLS").await, "-ERR STLS is only valid before login");
    assert!(c.cmd("NOOP").await.starts_with("+OK"));
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let s = start().await;
    let mut c = Client::connect(s.addr).await;
    c.send(&format!(
        "USER {JOHN}\r\nPASS {PASSWORD}\r\nSTAT\r\nLIST\r\nDELE 1\r\nUIDL 1\r\nQUIT\r\n"
    ))
    .await;
    assert_eq!(c.line().await, "+OK send PASS");
    assert!(c.line().await.starts_with("+OK 2 messages"));
    assert!(c.line().await.starts_with("+OK 2 "));
    assert!(c.line().await.starts_with("+OK 2 messages"));
    assert_eq!(c.multi().await.len(), 2);
    assert_eq!(c.line().await, "+OK message 1 deleted");
    assert_eq!(c.line().await, "-ERR message 1 already deleted");
    assert_eq!(c.line().await, "+OK pophost signing off (1 messages left)");
    assert!(c.closed().await);
    assert_eq!(stored(&s).await, 1);
}

#[tokio::test]
async fn dele_then_quit_commits() {
    let s = start().await;
    let mut c = Client::login(s.addr).await;
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted");
    assert!(c.cmd("STAT").await.starts_with("+OK 1 "));
    assert_eq!(stored(&s).await, 2, "nothing is deleted before UPDATE");
    assert_eq!(
        c.cmd("QUIT").await,
        "+OK pophost signing off (1 messages left)"
    );
    assert_eq!(stored(&s).await, 1);
    let mut again = Client::login(s.addr).await;
    assert!(again.cmd("RETR 1").await.starts_with("+OK"));
    assert_eq!(again.multi().await[0], "Subject: two");
}

#[tokio::test]
async fn dele_then_disconnect_deletes_nothing() {
    let s = start().await;
    let mut c = Client::login(s.addr).await;
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted");
    drop(c);
    let mut again = login_when_free(s.addr).await;
    assert!(again.cmd("STAT").await.starts_with("+OK 2 "));
    assert_eq!(stored(&s).await, 2);
}

#[tokio::test]
async fn rset_takes_the_deletion_marks_back() {
    let s = start().await;
    let mut c = Client::login(s.addr).await;
    c.cmd("DELE 1").await;
    c.cmd("DELE 2").await;
    assert_eq!(c.cmd("LIST 1").await, "-ERR message 1 already deleted");
    let r = c.cmd("RSET").await;
    assert!(r.starts_with("+OK maildrop has 2 messages"), "{r}");
    assert!(c.cmd("LIST 1").await.starts_with("+OK 1 "));
    assert_eq!(
        c.cmd("QUIT").await,
        "+OK pophost signing off (2 messages left)"
    );
    assert_eq!(stored(&s).await, 2);
}

#[tokio::test]
async fn a_second_login_to_a_locked_maildrop_is_in_use() {
    let s = start().await;
    let mut holder = Client::login(s.addr).await;
    let mut other = Client::connect(s.addr).await;
    other.cmd(&format!("USER {JOHN}")).await;
    let r = other.cmd(&format!("PASS {PASSWORD}")).await;
    assert_eq!(r, "-ERR [IN-USE] maildrop is locked by another session");
    // Still in AUTHORIZATION, and the lock is free again once the holder has quit.
    assert_eq!(
        other.cmd("STAT").await,
        "-ERR command not valid before login"
    );
    holder.cmd("QUIT").await;
    other.cmd(&format!("USER {JOHN}")).await;
    assert!(
        other
            .cmd(&format!("PASS {PASSWORD}"))
            .await
            .starts_with("+OK")
    );
}

#[tokio::test]
async fn sasl_plain_logs_in_with_and_without_an_initial_response() {
    let s = start().await;
    let message = BASE64.encode(format!("\0{JOHN}\0{PASSWORD}"));
    let mut c = Client::connect(s.addr).await;
    assert!(
        c.cmd(&format!("AUTH PLAIN {message}"))
            .await
            .starts_with("+OK 2 messages")
    );
    c.cmd("QUIT").await;

    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ ");
    assert!(c.cmd(&message).await.starts_with("+OK 2 messages"));
    c.cmd("QUIT").await;

    // A wrong password, and a cancelled exchange: both leave the session in AUTHORIZATION.
    let mut c = Client::connect(s.addr).await;
    let wrong = BASE64.encode(format!("\0{JOHN}\0not it"));
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {wrong}")).await,
        "-ERR [AUTH] invalid login or password"
    );
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ ");
    assert_eq!(c.cmd("*").await, "-ERR authentication cancelled");
    assert!(
        c.cmd(&format!("AUTH PLAIN {message}"))
            .await
            .starts_with("+OK")
    );
}

#[tokio::test]
async fn quit_before_login_closes() {
    let s = start().await;
    let mut c = Client::connect(s.addr).await;
    assert_eq!(c.cmd("QUIT").await, "+OK pophost signing off");
    assert!(c.closed().await);
}

/// What the servers of this test binary log. A global subscriber, as a scoped one misses spans
/// whose callsites other tests' threads registered first.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn get() -> &'static Log {
        static LOG: OnceLock<Log> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = Log::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            log
        })
    }

    fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let bytes = self.0.lock().expect("log").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

/// The session's span names the mailbox the login reached, by its domain's own name, not the
/// alias the client typed.
#[tokio::test]
async fn a_login_through_an_alias_is_logged_under_the_canonical_domain() {
    let log = Log::get();
    let s = start().await;
    let domain = DomainName::parse("example.com").expect("domain");
    let alias = DomainName::parse("example.net").expect("alias");
    s.store.add_alias(&alias, &domain).await.expect("alias");
    let mut c = Client::connect(s.addr).await;
    // The client's port tells this session's lines from other tests'.
    let peer = format!("peer={}", c.wr.local_addr().expect("local address"));
    c.cmd("USER john@example.net").await;
    assert!(c.cmd(&format!("PASS {PASSWORD}")).await.starts_with("+OK"));
    c.cmd("QUIT").await;
    // The summary is logged before the connection is closed.
    assert!(c.closed().await);
    let summary = log.lines_with(&["session summary", &peer]);
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert!(
        summary[0].contains("user=\"john@example.com\"")
            && summary[0].contains("tenant=example.com"),
        "{}",
        summary[0]
    );
    assert!(!summary[0].contains("example.net"), "{}", summary[0]);
}

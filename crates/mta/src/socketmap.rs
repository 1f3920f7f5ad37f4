//! The hosted domains and mailboxes as a Postfix socketmap (socketmap_table(5)), so that Postfix
//! asks pophost at SMTP time instead of keeping lists of its own that drift from the store:
//! `virtual_mailbox_domains = socketmap:…:domain` and `virtual_mailbox_maps = socketmap:…:mailbox`.
//! Without them Postfix accepts mail for unknown users, LMTP refuses it later, and Postfix
//! bounces it to a forged sender (backscatter).
//!
//! Each request and reply is a netstring (`<length>:<bytes>,`); a request is `name<SP>key` and
//! is answered `OK<SP>value`, `NOTFOUND<SP>`, `TEMP<SP>reason` or `PERM<SP>reason`. Postfix
//! keeps a connection for many requests. `frame` finds a request's boundary and `Request::parse`
//! reads it, both pure; `Socketmap` does the I/O and the lookups.
//!
//! The answers are LMTP's at RCPT: a disabled domain or user is found (it cannot log in, but
//! still receives mail), and an alias domain counts as the domain it stands for.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use mailstore::{Address, Delivery, Directory, DomainName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Postfix's own limit on a socketmap reply (`socketmap_max_reply`, 100000 bytes): its requests
/// are a map name and a key, far shorter, so a request this long is not from Postfix.
pub const DEFAULT_MAX_REQUEST: usize = 100_000;

/// Digits a netstring length may have: more than any allowed length needs, and few enough that
/// a stream of zeros cannot grow the buffer without end.
const MAX_LENGTH_DIGITS: usize = 10;

#[derive(Debug, Clone)]
pub struct Config {
    /// How long a connection may take to send its next complete request. Postfix closes its
    /// own idle socketmap connections after 10 s and reconnects without error when the server
    /// closed first, so this only frees connections that are stuck.
    pub idle_timeout: Duration,
    /// Longest request accepted (netstring payload, in bytes); longer closes the connection.
    pub max_request: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            max_request: DEFAULT_MAX_REQUEST,
        }
    }
}

/// Why a byte stream is not a sequence of netstrings. The stream cannot be resynchronised
/// after any of these: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameError {
    /// The length is empty, has a non-digit, or has too many digits.
    BadLength,
    /// The length is over the configured limit.
    TooLong,
    /// The payload is not followed by `,`.
    MissingComma,
}

/// The first netstring in `buf`: the payload's range and the bytes the whole netstring takes,
/// or `None` while it is incomplete.
fn frame(buf: &[u8], max: usize) -> Result<Option<(Range<usize>, usize)>, FrameError> {
    let mut len: usize = 0;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b':' if i == 0 => return Err(FrameError::BadLength),
            b':' => {
                let start = i + 1;
                let end = start + len;
                return match buf.get(end) {
                    None => Ok(None),
                    Some(b',') => Ok(Some((start..end, end + 1))),
                    Some(_) => Err(FrameError::MissingComma),
                };
            }
            b'0'..=b'9' if i < MAX_LENGTH_DIGITS => {
                len = len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(b - b'0')))
                    .filter(|l| *l <= max)
                    .ok_or(FrameError::TooLong)?;
            }
            _ => return Err(FrameError::BadLength),
        }
    }
    Ok(None)
}

/// A map this service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    /// A hosted domain or alias → the domain's own name.
    Domain,
    /// `local@domain` of an existing mailbox → its address under the domain's own name.
    Mailbox,
}

/// One request, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    Lookup(Map, &'a [u8]),
    UnknownMap,
    /// No space between a name and a key.
    Malformed,
}

impl<'a> Request<'a> {
    fn parse(payload: &'a [u8]) -> Self {
        let Some(space) = payload.iter().position(|&b| b == b' ') else {
            return Request::Malformed;
        };
        let (name, key) = (&payload[..space], &payload[space + 1..]);
        match name {
            b"domain" => Request::Lookup(Map::Domain, key),
            b"mailbox" => Request::Lookup(Map::Mailbox, key),
            _ => Request::UnknownMap,
        }
    }
}

/// A reply, before it is framed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Ok(String),
    NotFound,
    Temp(&'static str),
    Perm(&'static str),
}

impl Reply {
    /// The reply as one netstring.
    fn encode(&self) -> Vec<u8> {
        let payload = match self {
            Reply::Ok(value) => format!("OK {value}"),
            Reply::NotFound => "NOTFOUND ".into(),
            Reply::Temp(reason) => format!("TEMP {reason}"),
            Reply::Perm(reason) => format!("PERM {reason}"),
        };
        let mut out = format!("{}:", payload.len()).into_bytes();
        out.extend_from_slice(payload.as_bytes());
        out.push(b',');
        out
    }

    fn label(&self) -> &'static str {
        match self {
            Reply::Ok(_) => "ok",
            Reply::NotFound => "notfound",
            Reply::Temp(_) => "temp",
            Reply::Perm(_) => "perm",
        }
    }
}

/// A store failure: Postfix defers the mail (`451 4.3.0`) and asks again later.
fn store_failed(e: &mailstore::StoreError) -> Reply {
    tracing::warn!(error = %e, "socketmap lookup failed");
    Reply::Temp("store unavailable")
}

/// Answers Postfix's socketmap lookups from the store.
pub struct Socketmap {
    directory: Arc<dyn Directory>,
    delivery: Arc<dyn Delivery>,
    config: Config,
}

impl Socketmap {
    /// `directory` resolves domains and aliases to the domain's own name; `delivery` finds
    /// mailboxes exactly as LMTP does at RCPT.
    pub fn new(directory: Arc<dyn Directory>, delivery: Arc<dyn Delivery>, config: Config) -> Self {
        Self {
            directory,
            delivery,
            config,
        }
    }

    /// Serves one connection until the peer closes it, sends something that is not a
    /// netstring, stays idle too long, or `abort` is cancelled.
    pub async fn handle<S>(&self, mut stream: S, abort: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut buf: Vec<u8> = Vec::with_capacity(512);
        let mut deadline = Instant::now() + self.config.idle_timeout;
        loop {
            // Requests already buffered are answered before reading again (a pipelining client).
            match frame(&buf, self.config.max_request) {
                Err(e) => {
                    tracing::debug!(error = ?e, "socketmap framing error; closing");
                    return;
                }
                Ok(Some((payload, used))) => {
                    let reply = self.answer(&buf[payload]).await;
                    buf.drain(..used);
                    let limit = self.config.idle_timeout;
                    if !crate::write_reply(&mut stream, &reply.encode(), limit, &abort).await {
                        return;
                    }
                    deadline = Instant::now() + self.config.idle_timeout;
                    continue;
                }
                Ok(None) => {}
            }
            if !crate::read_more(&mut stream, &mut buf, deadline, &abort, "socketmap").await {
                return;
            }
        }
    }

    async fn answer(&self, payload: &[u8]) -> Reply {
        let (map, reply) = match Request::parse(payload) {
            Request::Lookup(Map::Domain, key) => ("domain", self.domain(key).await),
            Request::Lookup(Map::Mailbox, key) => ("mailbox", self.mailbox(key).await),
            Request::UnknownMap => ("unknown", Reply::Perm("unknown map")),
            Request::Malformed => ("unknown", Reply::Perm("malformed request")),
        };
        metrics::counter!("pophost_socketmap_lookups_total", "map" => map, "result" => reply.label())
            .increment(1);
        reply
    }

    /// A key that is not a domain name is simply not one of ours.
    async fn domain(&self, key: &[u8]) -> Reply {
        let Some(name) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| DomainName::parse(k).ok())
        else {
            return Reply::NotFound;
        };
        match self.directory.domain_policy(&name).await {
            Ok(Some(policy)) => Reply::Ok(policy.name.to_string()),
            Ok(None) => Reply::NotFound,
            Err(e) => store_failed(&e),
        }
    }

    async fn mailbox(&self, key: &[u8]) -> Reply {
        let Some(address) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| Address::parse(k).ok())
        else {
            return Reply::NotFound;
        };
        // The domain's own name first, so the value names the mailbox as the domain does, not
        // as the alias the sender used.
        let domain = match self.directory.domain_policy(&address.domain).await {
            Ok(Some(policy)) => policy.name,
            Ok(None) => return Reply::NotFound,
            Err(e) => return store_failed(&e),
        };
        let canonical = Address {
            local: address.local,
            domain,
        };
        match self.delivery.find_recipient(&canonical).await {
            Ok(Some(_)) => Reply::Ok(canonical.to_string()),
            Ok(None) => Reply::NotFound,
            Err(e) => store_failed(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use mailstore::{LockOptions, QuotaChange, SqliteStore};
    use tokio::io::DuplexStream;

    #[test]
    fn frames() {
        let max = 100;
        assert_eq!(frame(b"", max), Ok(None));
        assert_eq!(frame(b"12", max), Ok(None));
        assert_eq!(frame(b"3:ab", max), Ok(None));
        assert_eq!(frame(b"3:abc", max), Ok(None));
        assert_eq!(frame(b"3:abc,rest", max), Ok(Some((2..5, 6))));
        assert_eq!(frame(b"0:,", max), Ok(Some((2..2, 3))));
        assert_eq!(frame(b"003:abc,", max), Ok(Some((4..7, 8))));
        assert_eq!(frame(b"100:", max), Ok(None));
        assert_eq!(frame(b"101:", max), Err(FrameError::TooLong));
        assert_eq!(frame(b"1000", max), Err(FrameError::TooLong));
        assert_eq!(frame(b":abc,", max), Err(FrameError::BadLength));
        assert_eq!(frame(b"3x:abc,", max), Err(FrameError::BadLength));
        assert_eq!(frame(b"-1:", max), Err(FrameError::BadLength));
        assert_eq!(frame(b"00000000000", max), Err(FrameError::BadLength));
        assert_eq!(frame(b"3:abcd", max), Err(FrameError::MissingComma));
        assert_eq!(
            frame(b"99999999999999999999999:", usize::MAX),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn requests() {
        assert_eq!(
            Request::parse(b"domain example.com"),
            Request::Lookup(Map::Domain, b"example.com")
        );
        assert_eq!(
            Request::parse(b"mailbox a b"),
            Request::Lookup(Map::Mailbox, b"a b")
        );
        assert_eq!(Request::parse(b"users x"), Request::UnknownMap);
        assert_eq!(Request::parse(b"domain"), Request::Malformed);
    }

    #[test]
    fn replies() {
        assert_eq!(Reply::Ok("a.example".into()).encode(), b"12:OK a.example,");
        assert_eq!(Reply::NotFound.encode(), b"9:NOTFOUND ,");
        assert_eq!(Reply::Temp("x").encode(), b"6:TEMP x,");
        assert_eq!(Reply::Perm("unknown map").encode(), b"16:PERM unknown map,");
        let e = mailstore::StoreError::Invalid("boom".into());
        assert_eq!(store_failed(&e), Reply::Temp("store unavailable"));
    }

    fn ns(s: &str) -> Vec<u8> {
        format!("{}:{s},", s.len()).into_bytes()
    }

    /// A store with `example.com` (alias `alias.example`), its users `john` and a disabled
    /// `jane`, and the socketmap on it.
    async fn service(config: Config) -> (tempfile::TempDir, Arc<Socketmap>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("db"), LockOptions::default(), true)
                .await
                .expect("open"),
        );
        let domain = DomainName::parse("example.com").expect("domain");
        store.add_domain(&domain).await.expect("add domain");
        store
            .add_alias(&DomainName::parse("alias.example").expect("alias"), &domain)
            .await
            .expect("add alias");
        for user in ["john@example.com", "jane@example.com"] {
            store
                .add_user(&Address::parse(user).expect("address"), "$argon2id$x", None)
                .await
                .expect("add user");
        }
        let jane = Address::parse("jane@example.com").expect("address");
        mailstore::Admin::set_user_enabled(&*store, &jane, false)
            .await
            .expect("disable");
        // A full mailbox is still a mailbox: the quota is the policy service's business.
        store
            .set_user_quota(
                &jane,
                QuotaChange {
                    messages: Some(Some(0)),
                    ..QuotaChange::default()
                },
            )
            .await
            .expect("quota");
        let map = Socketmap::new(store.clone(), store, config);
        (dir, Arc::new(map))
    }

    /// Runs the service on one end of a pipe; the test talks on the other.
    fn connect(map: &Arc<Socketmap>) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let map = map.clone();
        let task = tokio::spawn(async move { map.handle(server, CancellationToken::new()).await });
        (client, task)
    }

    /// Reads one netstring reply.
    async fn reply(client: &mut DuplexStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            if let Ok(Some((payload, _))) = frame(&buf, DEFAULT_MAX_REQUEST) {
                return String::from_utf8(buf[payload].to_vec()).expect("utf-8");
            }
            let n = client.read(&mut byte).await.expect("read");
            assert_eq!(n, 1, "connection closed before a reply; got {buf:?}");
            buf.push(byte[0]);
        }
    }

    async fn ask(client: &mut DuplexStream, request: &str) -> String {
        client.write_all(&ns(request)).await.expect("write");
        reply(client).await
    }

    /// True when the server closed the connection without sending anything more.
    async fn closed(client: &mut DuplexStream, task: tokio::task::JoinHandle<()>) -> bool {
        let mut rest = Vec::new();
        let read = client.read_to_end(&mut rest).await;
        task.await.expect("handler did not panic");
        read.is_ok() && rest.is_empty()
    }

    #[tokio::test]
    async fn lookups() {
        let (_dir, map) = service(Config::default()).await;
        let (mut c, task) = connect(&map);
        // All on one connection, as Postfix keeps it.
        assert_eq!(ask(&mut c, "domain example.com").await, "OK example.com");
        assert_eq!(ask(&mut c, "domain EXAMPLE.Com.").await, "OK example.com");
        assert_eq!(ask(&mut c, "domain alias.example").await, "OK example.com");
        assert_eq!(ask(&mut c, "domain other.example").await, "NOTFOUND ");
        assert_eq!(ask(&mut c, "domain not a domain").await, "NOTFOUND ");
        assert_eq!(ask(&mut c, "domain ").await, "NOTFOUND ");
        assert_eq!(
            ask(&mut c, "mailbox john@example.com").await,
            "OK john@example.com"
        );
        assert_eq!(
            ask(&mut c, "mailbox John@Alias.Example").await,
            "OK john@example.com"
        );
        // Disabled and full: LMTP still accepts it at RCPT (full is the policy service's
        // answer), so the map must find it.
        assert_eq!(
            ask(&mut c, "mailbox jane@alias.example").await,
            "OK jane@example.com"
        );
        assert_eq!(ask(&mut c, "mailbox nobody@example.com").await, "NOTFOUND ");
        assert_eq!(ask(&mut c, "mailbox john@other.example").await, "NOTFOUND ");
        assert_eq!(ask(&mut c, "mailbox @example.com").await, "NOTFOUND ");
        assert_eq!(ask(&mut c, "mailbox john").await, "NOTFOUND ");
        assert_eq!(ask(&mut c, "mailbox jo hn@example.com").await, "NOTFOUND ");
        assert_eq!(
            ask(&mut c, "users john@example.com").await,
            "PERM unknown map"
        );
        assert_eq!(ask(&mut c, "domain").await, "PERM malformed request");
        // A key that is not UTF-8 is not found, not an error.
        c.write_all(b"9:domain \xff\xfe,").await.expect("write");
        assert_eq!(reply(&mut c).await, "NOTFOUND ");
        // Several requests in one write are answered in order.
        let both = [ns("domain example.com"), ns("mailbox x@example.com")].concat();
        c.write_all(&both).await.expect("write");
        assert_eq!(reply(&mut c).await, "OK example.com");
        assert_eq!(reply(&mut c).await, "NOTFOUND ");
        c.shutdown().await.expect("shutdown");
        assert!(closed(&mut c, task).await);
    }

    #[tokio::test]
    async fn a_request_dribbled_byte_by_byte_is_answered() {
        let (_dir, map) = service(Config::default()).await;
        let (mut c, _task) = connect(&map);
        for b in ns("mailbox john@alias.example") {
            c.write_all(&[b]).await.expect("write");
            tokio::task::yield_now().await;
        }
        assert_eq!(reply(&mut c).await, "OK john@example.com");
    }

    #[tokio::test]
    async fn bad_framing_closes_the_connection() {
        let config = Config {
            max_request: 64,
            ..Config::default()
        };
        let (_dir, map) = service(config).await;
        for bad in [
            &b"x:domain example.com,"[..],
            b"18:domain example.com;",
            b"65:",
            b"1000000",
            b":,",
        ] {
            let (mut c, task) = connect(&map);
            // A good request first: the connection is closed at the bad one, not before.
            assert_eq!(ask(&mut c, "domain example.com").await, "OK example.com");
            c.write_all(bad).await.expect("write");
            assert!(closed(&mut c, task).await, "{bad:?} did not close");
        }
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        // Real time, kept short: the store's own pool timeouts would fire under paused time.
        let config = Config {
            idle_timeout: Duration::from_millis(200),
            ..Config::default()
        };
        let (_dir, map) = service(config).await;
        let (mut c, task) = connect(&map);
        assert_eq!(ask(&mut c, "domain example.com").await, "OK example.com");
        // Half a request, then nothing: a request must be complete within the timeout.
        c.write_all(b"18:domain").await.expect("write");
        let closed = tokio::time::timeout(Duration::from_secs(10), closed(&mut c, task)).await;
        assert_eq!(closed.ok(), Some(true));
    }

    #[tokio::test]
    async fn abort_closes_the_connection() {
        let (_dir, map) = service(Config::default()).await;
        let (mut c, server) = tokio::io::duplex(1024);
        let abort = CancellationToken::new();
        let task = tokio::spawn({
            let (map, abort) = (map.clone(), abort.clone());
            async move { map.handle(server, abort).await }
        });
        assert_eq!(ask(&mut c, "domain example.com").await, "OK example.com");
        abort.cancel();
        assert!(closed(&mut c, task).await);
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Socketmap>();
    }

    /// `serve` spawns handlers on a multi-threaded runtime: their futures must be `Send`.
    #[allow(dead_code)]
    fn handle_is_send(map: &Socketmap) {
        fn check<F: Send>(_: F) {}
        check(map.handle(tokio::io::duplex(1).0, CancellationToken::new()));
    }
}

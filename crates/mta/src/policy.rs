//! The quota check at RCPT as a Postfix policy service (`check_policy_service`, see Postfix's
//! SMTPD_POLICY_README), so that a full mailbox is refused while the sending client is still
//! connected. Without it Postfix accepts the message, LMTP refuses it at delivery, and Postfix
//! bounces it to a sender that is often forged (backscatter).
//!
//! A request is `name=value` lines ended by an empty line; the reply is `action=…` and an empty
//! line; Postfix keeps a connection for many requests. The answer is exactly LMTP's rule at RCPT
//! (`Delivery::accept_recipient`) in exactly LMTP's words (`lmtp::quota_reply`): a recipient that is
//! full gets `552 5.2.2` (or `452 4.2.2` where the domain asks senders to retry), everything
//! else `DUNNO`, leaving unknown recipients to `virtual_mailbox_maps` and the other checks.
//!
//! When the store fails the answer is `DEFER_IF_PERMIT Service temporarily unavailable`, the
//! README's own example: LMTP would answer `451` at RCPT too, so the mail is deferred either
//! way, while a permanent refusal by a later restriction still wins. Disconnecting instead (the
//! README's rule for a server "in trouble") makes Postfix wait a second, retry, and then apply
//! its `default_action` (`451 4.3.5 Server configuration problem`), which misleads the sender.

use std::sync::Arc;
use std::time::Duration;

use mailstore::{Address, Delivery, UserId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest attribute line, without its newline. Postfix's own attributes are far shorter; the
/// one that can come near is `helo_name` from a client that fills a whole SMTP line (Postfix
/// reads up to 2048 bytes), and closing then only defers that client's mail.
pub const MAX_LINE: usize = 2048;

/// Most attributes in one request: Postfix 3 sends about 30.
pub const MAX_ATTRIBUTES: usize = 100;

/// The answer when the store cannot tell.
const STORE_FAILED: &str = "DEFER_IF_PERMIT Service temporarily unavailable";

#[derive(Debug, Clone)]
pub struct Config {
    /// How long a connection may take to send its next complete request. Longer than Postfix's
    /// `smtpd_policy_service_max_idle` (300 s), after which Postfix closes an unused connection
    /// itself: when the server closes first, Postfix's next request waits a second before it
    /// reconnects, and the SMTP client with it.
    pub idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(330),
        }
    }
}

/// The action for `recipient` given what `accept_recipient` said of it.
fn action(recipient: &Address, outcome: mailstore::Result<Option<UserId>>) -> String {
    match outcome {
        // An unknown recipient is `virtual_mailbox_maps`' to refuse, with its own words.
        Ok(_) => "DUNNO".into(),
        Err(e) => lmtp::quota_reply(recipient, &e).unwrap_or_else(|| {
            tracing::warn!(error = %e, "policy recipient check failed");
            STORE_FAILED.into()
        }),
    }
}

/// The attributes of one request this service reads; the rest are ignored. A repeated
/// attribute keeps its last value (the README allows either).
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    request: Option<Vec<u8>>,
    protocol_state: Option<Vec<u8>>,
    recipient: Option<Vec<u8>>,
    size: Option<Vec<u8>>,
    attributes: usize,
}

/// Why a connection is closed before its request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Violation {
    LineTooLong,
    TooManyAttributes,
    /// A line that is not `name=value`.
    NotAnAttribute,
}

impl Query {
    /// Adds one attribute line (without its newline).
    fn add(&mut self, line: &[u8]) -> Result<(), Violation> {
        if line.len() > MAX_LINE {
            return Err(Violation::LineTooLong);
        }
        self.attributes += 1;
        if self.attributes > MAX_ATTRIBUTES {
            return Err(Violation::TooManyAttributes);
        }
        let eq = line
            .iter()
            .position(|&b| b == b'=')
            .ok_or(Violation::NotAnAttribute)?;
        let (name, value) = (&line[..eq], line[eq + 1..].to_vec());
        match name {
            b"request" => self.request = Some(value),
            b"protocol_state" => self.protocol_state = Some(value),
            b"recipient" => self.recipient = Some(value),
            b"size" => self.size = Some(value),
            _ => {}
        }
        Ok(())
    }

    /// The recipient to check and the declared size, when this is a question about one: an
    /// access policy request at RCPT with a recipient that is an address. Postfix sends `size`
    /// 0 when the client declared none, which is no size.
    fn recipient_check(&self) -> Option<(Address, Option<u64>)> {
        if self.request.as_deref() != Some(b"smtpd_access_policy")
            || !self
                .protocol_state
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(b"RCPT"))
        {
            return None;
        }
        let recipient = std::str::from_utf8(self.recipient.as_deref()?).ok()?;
        let address = Address::parse(recipient).ok()?;
        let size = self
            .size
            .as_deref()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|s| *s > 0);
        Some((address, size))
    }
}

/// Answers Postfix's access policy requests with the store's quota check.
pub struct PolicyService {
    delivery: Arc<dyn Delivery>,
    config: Config,
}

impl PolicyService {
    pub fn new(delivery: Arc<dyn Delivery>, config: Config) -> Self {
        Self { delivery, config }
    }

    /// Serves one connection until the peer closes it, breaks a limit, stays idle too long, or
    /// `abort` is cancelled. A request cut off by the end of the stream is not answered.
    pub async fn handle<S>(&self, mut stream: S, abort: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut query = Query::default();
        let mut deadline = Instant::now() + self.config.idle_timeout;
        loop {
            // Lines already buffered are handled before reading again (a pipelining client).
            while let Some(newline) = buf.iter().position(|&b| b == b'\n') {
                let line = buf[..newline]
                    .strip_suffix(b"\r")
                    .unwrap_or(&buf[..newline]);
                if !line.is_empty() {
                    if let Err(v) = query.add(line) {
                        tracing::debug!(violation = ?v, "policy request refused; closing");
                        return;
                    }
                    buf.drain(..=newline);
                    continue;
                }
                buf.drain(..=newline);
                let answer = self.answer(&std::mem::take(&mut query)).await;
                let reply = format!("action={answer}\n\n");
                let limit = self.config.idle_timeout;
                if !crate::write_reply(&mut stream, reply.as_bytes(), limit, &abort).await {
                    return;
                }
                deadline = Instant::now() + self.config.idle_timeout;
            }
            // One more byte than a line may have (its CR) and still no newline.
            if buf.len() > MAX_LINE + 1 {
                tracing::debug!(violation = ?Violation::LineTooLong, "policy request refused; closing");
                return;
            }
            if !crate::read_more(&mut stream, &mut buf, deadline, &abort, "policy").await {
                return;
            }
        }
    }

    async fn answer(&self, query: &Query) -> String {
        let Some((recipient, size)) = query.recipient_check() else {
            return "DUNNO".into();
        };
        let outcome = self.delivery.accept_recipient(&recipient, size).await;
        let action = action(&recipient, outcome);
        let label = match action.as_bytes().first() {
            Some(b'5') => "reject",
            Some(b'4') => "defer",
            Some(b'D') if action != "DUNNO" => "unavailable",
            _ => "dunno",
        };
        metrics::counter!("pophost_policy_checks_total", "action" => label).increment(1);
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use mailstore::{
        Directory, DomainName, LockOptions, Policies, QuotaChange, SqliteStore, StoreError,
    };
    use tokio::io::DuplexStream;

    fn addr(s: &str) -> Address {
        Address::parse(s).expect("address")
    }

    #[test]
    fn replies_read_like_lmtp() {
        let a = addr("John@Example.com");
        assert_eq!(
            lmtp::quota_reply(&a, &StoreError::QuotaExceeded).as_deref(),
            Some("552 5.2.2 <john@example.com> Mailbox full")
        );
        assert_eq!(
            lmtp::quota_reply(&a, &StoreError::QuotaExceededTemporary).as_deref(),
            Some("452 4.2.2 <john@example.com> Mailbox full, try again later")
        );
        assert_eq!(lmtp::quota_reply(&a, &StoreError::InUse), None);
        assert_eq!(action(&a, Ok(Some(UserId(1)))), "DUNNO");
        assert_eq!(action(&a, Ok(None)), "DUNNO");
        assert_eq!(
            action(&a, Err(StoreError::QuotaExceeded)),
            "552 5.2.2 <john@example.com> Mailbox full"
        );
        assert_eq!(
            action(&a, Err(StoreError::Invalid("boom".into()))),
            "DEFER_IF_PERMIT Service temporarily unavailable"
        );
    }

    #[test]
    fn queries() {
        let query = |lines: &[&str]| {
            let mut q = Query::default();
            for l in lines {
                q.add(l.as_bytes()).expect("attribute");
            }
            q.recipient_check()
        };
        let rcpt = ["request=smtpd_access_policy", "protocol_state=RCPT"];
        assert_eq!(
            query(&[&rcpt[..], &["recipient=a@b.example", "size=0"]].concat()),
            Some((addr("a@b.example"), None))
        );
        assert_eq!(
            query(&[&rcpt[..], &["size=12", "recipient=a@b.example"]].concat()),
            Some((addr("a@b.example"), Some(12)))
        );
        // A repeated attribute keeps its last value; a bad size is no size.
        assert_eq!(
            query(
                &[
                    &rcpt[..],
                    &["recipient=x", "recipient=a@b.example", "size=x"]
                ]
                .concat()
            ),
            Some((addr("a@b.example"), None))
        );
        assert_eq!(query(&rcpt), None);
        assert_eq!(query(&[&rcpt[..], &["recipient="]].concat()), None);
        assert_eq!(
            query(&[&rcpt[..], &["recipient=not an address"]].concat()),
            None
        );
        assert_eq!(
            query(&[
                "request=smtpd_access_policy",
                "protocol_state=DATA",
                "recipient=a@b.example"
            ]),
            None
        );
        assert_eq!(
            query(&[
                "request=other",
                "protocol_state=RCPT",
                "recipient=a@b.example"
            ]),
            None
        );

        let mut q = Query::default();
        assert_eq!(q.add(b"no equals sign"), Err(Violation::NotAnAttribute));
        let mut q = Query::default();
        assert_eq!(
            q.add(&vec![b'x'; MAX_LINE + 1]),
            Err(Violation::LineTooLong)
        );
        let mut q = Query::default();
        for _ in 0..MAX_ATTRIBUTES {
            q.add(b"a=b").expect("attribute");
        }
        assert_eq!(q.add(b"a=b"), Err(Violation::TooManyAttributes));
    }

    /// A store with users of `example.com` (alias `alias.example`): `room` with no quota,
    /// `full` with no room for another message, `small` with 100 bytes; and `temp.example`,
    /// which asks senders to retry, with a full `full`.
    async fn service(config: Config) -> (tempfile::TempDir, Arc<PolicyService>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("db"), LockOptions::default(), true)
                .await
                .expect("open"),
        );
        for name in ["example.com", "temp.example"] {
            let d = DomainName::parse(name).expect("domain");
            store.add_domain(&d).await.expect("add domain");
        }
        let example = DomainName::parse("example.com").expect("domain");
        store
            .add_alias(
                &DomainName::parse("alias.example").expect("alias"),
                &example,
            )
            .await
            .expect("add alias");
        let temp = DomainName::parse("temp.example").expect("domain");
        let mut p = store.domain_policies(&temp).await.expect("policies");
        p.quota_tempfail = true;
        store
            .set_domain_policies(&temp, &p)
            .await
            .expect("set policies");
        let quotas = [
            ("room@example.com", QuotaChange::default()),
            (
                "full@example.com",
                QuotaChange {
                    messages: Some(Some(0)),
                    ..QuotaChange::default()
                },
            ),
            (
                "small@example.com",
                QuotaChange {
                    bytes: Some(Some(100)),
                    ..QuotaChange::default()
                },
            ),
            (
                "full@temp.example",
                QuotaChange {
                    messages: Some(Some(0)),
                    ..QuotaChange::default()
                },
            ),
        ];
        for (user, quota) in quotas {
            let a = addr(user);
            store
                .add_user(&a, "$argon2id$x", None)
                .await
                .expect("add user");
            store.set_user_quota(&a, quota).await.expect("quota");
        }
        (dir, Arc::new(PolicyService::new(store, config)))
    }

    fn connect(service: &Arc<PolicyService>) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let service = service.clone();
        let task =
            tokio::spawn(async move { service.handle(server, CancellationToken::new()).await });
        (client, task)
    }

    /// A request as Postfix sends it at RCPT.
    fn request(recipient: &str, size: u64) -> String {
        format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
             client_address=192.0.2.1\nhelo_name=mx.sender.example\nsender=a@sender.example\n\
             recipient={recipient}\nrecipient_count=0\nqueue_id=\ninstance=1a2b.5e6f.0\n\
             size={size}\nsasl_method=\nstress=\n\n"
        )
    }

    /// Reads one reply: the `action=` line and the empty line.
    async fn reply(client: &mut DuplexStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\n\n") {
            let n = client.read(&mut byte).await.expect("read");
            assert_eq!(n, 1, "connection closed before a reply; got {buf:?}");
            buf.push(byte[0]);
        }
        String::from_utf8(buf).expect("utf-8")
    }

    async fn ask(client: &mut DuplexStream, request: &str) -> String {
        client.write_all(request.as_bytes()).await.expect("write");
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
    async fn quota_checks() {
        let (_dir, service) = service(Config::default()).await;
        let (mut c, task) = connect(&service);
        // All on one connection, as Postfix keeps it.
        let ok = "action=DUNNO\n\n";
        assert_eq!(ask(&mut c, &request("room@example.com", 0)).await, ok);
        assert_eq!(ask(&mut c, &request("room@example.com", 1 << 40)).await, ok);
        assert_eq!(
            ask(&mut c, &request("full@example.com", 0)).await,
            "action=552 5.2.2 <full@example.com> Mailbox full\n\n"
        );
        // Through the alias, named as the sender named it (as LMTP does).
        assert_eq!(
            ask(&mut c, &request("Full@Alias.Example", 0)).await,
            "action=552 5.2.2 <full@alias.example> Mailbox full\n\n"
        );
        // By bytes: room for a message of unknown size (0), none for 500 declared bytes.
        assert_eq!(ask(&mut c, &request("small@example.com", 0)).await, ok);
        assert_eq!(ask(&mut c, &request("small@example.com", 100)).await, ok);
        assert_eq!(
            ask(&mut c, &request("small@example.com", 500)).await,
            "action=552 5.2.2 <small@example.com> Mailbox full\n\n"
        );
        assert_eq!(
            ask(&mut c, &request("full@temp.example", 0)).await,
            "action=452 4.2.2 <full@temp.example> Mailbox full, try again later\n\n"
        );
        // Unknown and unparsable recipients are left to the other restrictions.
        assert_eq!(ask(&mut c, &request("nobody@example.com", 0)).await, ok);
        assert_eq!(ask(&mut c, &request("full@other.example", 0)).await, ok);
        assert_eq!(ask(&mut c, &request("<>", 0)).await, ok);
        // Other stages and requests without a recipient.
        let data = "request=smtpd_access_policy\nprotocol_state=DATA\n\
                    recipient=full@example.com\nsize=0\n\n";
        assert_eq!(ask(&mut c, data).await, ok);
        let helo = "request=smtpd_access_policy\nprotocol_state=HELO\nhelo_name=x\n\n";
        assert_eq!(ask(&mut c, helo).await, ok);
        // CRLF lines (a person testing by hand) read the same.
        let crlf = request("full@example.com", 0).replace('\n', "\r\n");
        assert_eq!(
            ask(&mut c, &crlf).await,
            "action=552 5.2.2 <full@example.com> Mailbox full\n\n"
        );
        // Two requests in one write are answered in order.
        let both = request("full@example.com", 0) + &request("room@example.com", 0);
        c.write_all(both.as_bytes()).await.expect("write");
        assert_eq!(
            reply(&mut c).await,
            "action=552 5.2.2 <full@example.com> Mailbox full\n\n"
        );
        assert_eq!(reply(&mut c).await, ok);
        c.shutdown().await.expect("shutdown");
        assert!(closed(&mut c, task).await);
    }

    #[tokio::test]
    async fn a_request_dribbled_byte_by_byte_is_answered() {
        let (_dir, service) = service(Config::default()).await;
        let (mut c, _task) = connect(&service);
        for b in request("full@example.com", 0).bytes() {
            c.write_all(&[b]).await.expect("write");
            tokio::task::yield_now().await;
        }
        assert_eq!(
            reply(&mut c).await,
            "action=552 5.2.2 <full@example.com> Mailbox full\n\n"
        );
    }

    #[tokio::test]
    async fn limits_close_the_connection() {
        let (_dir, service) = service(Config::default()).await;
        // The longest line is accepted.
        let (mut c, _task) = connect(&service);
        let longest = format!("ccert_subject={}\n", "x".repeat(MAX_LINE - 14));
        assert_eq!(longest.len(), MAX_LINE + 1);
        let answer = ask(&mut c, &(longest + &request("room@example.com", 0))).await;
        assert_eq!(answer, "action=DUNNO\n\n");

        let too_long_line = format!("helo_name={}\n\n", "x".repeat(MAX_LINE));
        let unterminated = "x".repeat(MAX_LINE + 2);
        let too_many = "a=b\n".repeat(MAX_ATTRIBUTES + 1) + "\n";
        let nonsense = String::from("nonsense\n\n");
        for bad in [&too_long_line, &unterminated, &too_many, &nonsense] {
            let (mut c, task) = connect(&service);
            assert_eq!(
                ask(&mut c, &request("room@example.com", 0)).await,
                "action=DUNNO\n\n"
            );
            c.write_all(bad.as_bytes()).await.expect("write");
            assert!(closed(&mut c, task).await, "{bad:?} did not close");
        }
    }

    #[tokio::test]
    async fn a_request_cut_off_by_eof_is_not_answered() {
        let (_dir, service) = service(Config::default()).await;
        let (mut c, task) = connect(&service);
        let cut = request("full@example.com", 0);
        let cut = cut.trim_end_matches('\n');
        c.write_all(cut.as_bytes()).await.expect("write");
        c.shutdown().await.expect("shutdown");
        assert!(closed(&mut c, task).await);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        // Real time, kept short: the store's own pool timeouts would fire under paused time.
        let config = Config {
            idle_timeout: Duration::from_millis(200),
        };
        let (_dir, service) = service(config).await;
        let (mut c, task) = connect(&service);
        assert_eq!(
            ask(&mut c, &request("room@example.com", 0)).await,
            "action=DUNNO\n\n"
        );
        c.write_all(b"request=smtpd_access_policy\n")
            .await
            .expect("write");
        let closed = tokio::time::timeout(Duration::from_secs(10), closed(&mut c, task)).await;
        assert_eq!(closed.ok(), Some(true));
    }

    #[tokio::test]
    async fn abort_closes_the_connection() {
        let (_dir, service) = service(Config::default()).await;
        let (mut c, server) = tokio::io::duplex(1024);
        let abort = CancellationToken::new();
        let task = tokio::spawn({
            let (service, abort) = (service.clone(), abort.clone());
            async move { service.handle(server, abort).await }
        });
        assert_eq!(
            ask(&mut c, &request("room@example.com", 0)).await,
            "action=DUNNO\n\n"
        );
        abort.cancel();
        assert!(closed(&mut c, task).await);
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<PolicyService>();
    }

    /// `serve` spawns handlers on a multi-threaded runtime: their futures must be `Send`.
    #[allow(dead_code)]
    fn handle_is_send(service: &PolicyService) {
        fn check<F: Send>(_: F) {}
        check(service.handle(tokio::io::duplex(1).0, CancellationToken::new()));
    }
}

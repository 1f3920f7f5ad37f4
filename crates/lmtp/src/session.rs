//! One LMTP connection: LHLO, a transaction of MAIL, RCPT… and DATA, answered per recipient.
//! A large body goes to the store in chunks as it arrives; each recipient's 250 is sent only
//! after the delivery transaction (shared with other deliveries: group commit) has committed.

use std::net::SocketAddr;
use std::sync::Arc;

use mailstore::{Address, BlobId, CHUNK_SIZE, Delivery, Parcel, Recipient, StoreError, UserId};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio_util::sync::CancellationToken;

use crate::command::{self, Command, Reject};
use crate::data::DataDecoder;
use crate::dedup::Fingerprint;
use crate::server::Config;

/// Longest command line accepted (RFC 5321 §4.5.3.1.4 says 512; extensions make them longer).
const MAX_COMMAND_LINE: usize = 2048;

pub struct Session {
    store: Arc<dyn Delivery>,
    config: Arc<Config>,
    peer: SocketAddr,
    abort: CancellationToken,
    lhlo: Option<String>,
    from: Option<String>,
    /// The size the client declared with `MAIL FROM … SIZE=` (RFC 1870), for the quota check
    /// at RCPT.
    declared_size: Option<u64>,
    /// The transaction's MAIL carried `SMTPUTF8` (RFC 6531): UTF-8 addresses are welcome.
    smtputf8: bool,
    rcpts: Vec<(Address, UserId)>,
}

/// An id for the Received header, to find a delivery in the logs: this process's start in
/// seconds and a counter (the body's row id is not known before the delivery commits).
fn delivery_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static STARTED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:X}.{n:X}", *STARTED)
}

/// How a read ended when it did not produce a line.
enum Stop {
    Eof,
    Idle,
    Abort,
    Io(std::io::Error),
}

impl Session {
    pub fn new(
        store: Arc<dyn Delivery>,
        config: Arc<Config>,
        peer: SocketAddr,
        abort: CancellationToken,
    ) -> Self {
        Self {
            store,
            config,
            peer,
            abort,
            lhlo: None,
            from: None,
            declared_size: None,
            smtputf8: false,
            rcpts: Vec::new(),
        }
    }

    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self, stream: S) {
        let (rd, wr) = tokio::io::split(stream);
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        let mut wr = BufWriter::new(wr);
        let greeting = format!("220 {} LMTP pophost ready\r\n", self.config.hostname);
        let mut line = Vec::new();
        let mut reply = greeting;
        loop {
            if wr.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
            // Pipelining: answer everything the client already sent before flushing.
            if rd.buffer().is_empty() && wr.flush().await.is_err() {
                return;
            }
            match self.read_line(&mut rd, &mut line).await {
                Ok(true) => {}
                Ok(false) => {
                    reply = "500 5.5.2 Line too long\r\n".into();
                    continue;
                }
                Err(Stop::Abort) => {
                    let _ = wr.write_all(b"421 4.3.2 Shutting down\r\n").await;
                    let _ = wr.flush().await;
                    return;
                }
                Err(Stop::Idle) => {
                    let _ = wr.write_all(b"421 4.4.2 Idle timeout\r\n").await;
                    let _ = wr.flush().await;
                    return;
                }
                Err(Stop::Eof) => return,
                Err(Stop::Io(e)) => {
                    tracing::info!(error = %e, "connection lost");
                    return;
                }
            }
            let cmd = match command::parse(&line) {
                Ok(cmd) => cmd,
                Err(Reject(r)) => {
                    reply = format!("{r}\r\n");
                    continue;
                }
            };
            reply = match cmd {
                Command::Quit => {
                    let _ = wr.write_all(b"221 2.0.0 Bye\r\n").await;
                    let _ = wr.flush().await;
                    return;
                }
                Command::Data => match self.data(&mut rd, &mut wr).await {
                    Ok(replies) => replies,
                    Err(_) => return,
                },
                cmd => self.command(cmd).await,
            };
        }
    }

    async fn command(&mut self, cmd: Command) -> String {
        let r = match cmd {
            Command::Lhlo(host) => {
                self.lhlo = Some(header_safe(&host));
                self.reset();
                format!(
                    "250-{}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE {}",
                    self.config.hostname, self.config.max_message_size
                )
            }
            Command::Helo => "500 5.5.1 This is LMTP: use LHLO".into(),
            Command::Mail { .. } if self.lhlo.is_none() => "503 5.5.1 LHLO first".into(),
            Command::Mail { .. } if self.from.is_some() => "503 5.5.1 Nested MAIL command".into(),
            Command::Mail { params, .. }
                if params
                    .size
                    .is_some_and(|s| s > self.config.max_message_size) =>
            {
                "552 5.3.4 Message size exceeds fixed maximum message size".into()
            }
            // RFC 6531 §3.7.4.1: a UTF-8 address needs the SMTPUTF8 parameter.
            Command::Mail { from, params } if !from.is_ascii() && !params.smtputf8 => {
                "553 5.6.7 A non-ASCII address needs SMTPUTF8".into()
            }
            Command::Mail { from, params } => {
                self.smtputf8 = params.smtputf8;
                self.from = Some(if params.smtputf8 {
                    utf8_header_safe(&from)
                } else {
                    header_safe(&from)
                });
                self.declared_size = params.size;
                "250 2.1.0 Sender OK".into()
            }
            Command::Rcpt { .. } if self.from.is_none() => "503 5.5.1 MAIL first".into(),
            Command::Rcpt { .. } if self.rcpts.len() >= self.config.max_recipients => {
                "452 4.5.3 Too many recipients".into()
            }
            Command::Rcpt { to } => self.rcpt(&to).await,
            Command::Rset => {
                self.reset();
                "250 2.0.0 OK".into()
            }
            Command::Noop => "250 2.0.0 OK".into(),
            Command::Vrfy => "252 2.5.0 Send some mail, we will try".into(),
            Command::Data | Command::Quit => "503 5.5.1 Bad sequence".into(),
        };
        r + "\r\n"
    }

    async fn rcpt(&mut self, to: &str) -> String {
        if !to.is_ascii() && !self.smtputf8 {
            return "553 5.6.7 A non-ASCII address needs SMTPUTF8".into();
        }
        let Ok(address) = Address::parse(to) else {
            return format!("550 5.1.1 <{}> No such user", header_safe(to));
        };
        // A full mailbox is refused here already, so the sender does not transfer the body for
        // nothing; DATA checks again, exactly, in the delivery transaction.
        match self
            .store
            .accept_recipient(&address, self.declared_size)
            .await
        {
            Ok(Some(user)) => {
                self.rcpts.push((address, user));
                "250 2.1.5 Recipient OK".into()
            }
            Ok(None) => format!("550 5.1.1 <{address}> No such user"),
            Err(e @ (StoreError::QuotaExceeded | StoreError::QuotaExceededTemporary)) => {
                refused(&address, e)
            }
            Err(e) => {
                tracing::warn!(error = %e, "recipient lookup failed");
                "451 4.3.0 Temporary lookup failure".into()
            }
        }
    }

    fn reset(&mut self) {
        self.from = None;
        self.declared_size = None;
        self.smtputf8 = false;
        self.rcpts.clear();
    }

    /// DATA: streams the body into the store and returns one reply line per recipient.
    /// `Err` means the connection is gone; nothing was acknowledged.
    async fn data<R, W>(
        &mut self,
        rd: &mut BufReader<R>,
        wr: &mut BufWriter<W>,
    ) -> Result<String, Stop>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.rcpts.is_empty() {
            return Ok(if self.from.is_none() {
                "503 5.5.1 MAIL first\r\n"
            } else {
                "554 5.5.1 No valid recipients\r\n"
            }
            .into());
        }
        wr.write_all(b"354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n")
            .await
            .map_err(Stop::Io)?;
        wr.flush().await.map_err(Stop::Io)?;

        let mut decoder = DataDecoder::new();
        let mut chunk = Vec::with_capacity(CHUNK_SIZE + 64 * 1024);
        let mut blob: Option<BlobId> = None;
        let mut seq = 0u32;
        let mut size = 0u64;
        let mut too_big = false;
        let mut failed: Option<StoreError> = None;
        // Not even the digest is computed while deduplication is off.
        let mut fingerprint = (!self.config.dedup_window.is_zero()).then(Fingerprint::new);
        while !decoder.is_done() {
            let buf = match tokio::time::timeout(self.config.idle_timeout, rd.fill_buf()).await {
                Err(_) => Err(Stop::Idle),
                Ok(Err(e)) => Err(Stop::Io(e)),
                Ok(Ok([])) => Err(Stop::Eof),
                Ok(Ok(buf)) => Ok(buf),
            };
            let buf = match buf {
                Ok(buf) => buf,
                Err(stop) => {
                    self.discard(blob).await;
                    return Err(stop);
                }
            };
            let before = chunk.len();
            let used = decoder.push(buf, &mut chunk);
            rd.consume(used);
            size += (chunk.len() - before) as u64;
            if let Some(f) = &mut fingerprint {
                f.update(&chunk[before..]);
            }
            if size > self.config.max_message_size {
                // Keep reading to the end of DATA so the connection stays in sync, storing nothing.
                too_big = true;
                chunk.clear();
            }
            // Full chunks of a large message go to the store as they arrive; the last part (all
            // of a small message) goes with the delivery itself, in its one transaction.
            let full = chunk.len() >= CHUNK_SIZE && !decoder.is_done();
            if full && !too_big && failed.is_none() {
                if let Err(e) = self.append(&mut blob, seq, &chunk).await {
                    failed = Some(e);
                }
                seq += 1;
            }
            if full || too_big || failed.is_some() {
                chunk.clear();
            }
        }
        let parcel = Parcel {
            blob,
            chunks: seq,
            tail: chunk,
            size,
            recipients: Vec::new(),
            dedup: fingerprint.and_then(|f| {
                f.key(
                    self.from.as_deref().unwrap_or_default(),
                    self.config.dedup_window,
                )
            }),
        };
        self.finish(parcel, too_big, failed).await
    }

    async fn append(
        &self,
        blob: &mut Option<BlobId>,
        seq: u32,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let id = match *blob {
            Some(id) => id,
            None => *blob.insert(self.store.begin_blob().await?),
        };
        self.store.append_chunk(id, seq, data).await
    }

    async fn discard(&self, blob: Option<BlobId>) {
        if let Some(blob) = blob
            && let Err(e) = self.store.discard_blob(blob).await
        {
            tracing::warn!(error = %e, "discarding partial body failed; cleaned up at restart");
        }
    }

    async fn finish(
        &mut self,
        mut parcel: Parcel,
        too_big: bool,
        failed: Option<StoreError>,
    ) -> Result<String, Stop> {
        let rcpts = std::mem::take(&mut self.rcpts);
        let from = self.from.take().unwrap_or_default();
        let all = |reply: &str| {
            rcpts
                .iter()
                .map(|_| format!("{reply}\r\n"))
                .collect::<String>()
        };
        if too_big {
            self.discard(parcel.blob).await;
            return Ok(all(
                "552 5.3.4 Message size exceeds fixed maximum message size",
            ));
        }
        if let Some(e) = failed {
            tracing::warn!(error = %e, "storing message body failed");
            self.discard(parcel.blob).await;
            return Ok(all("451 4.3.0 Temporary storage failure"));
        }
        let received = received_date();
        let id = delivery_id();
        parcel.recipients = rcpts
            .iter()
            .map(|(address, user)| Recipient {
                user: *user,
                prefix: format!(
                    "Return-Path: <{from}>\r\nDelivered-To: {address}\r\nReceived: from {lhlo} ([{ip}])\r\n\tby {host} (pophost) with LMTP id {id}\r\n\tfor <{address}>; {received}\r\n",
                    lhlo = self.lhlo.as_deref().unwrap_or("unknown"),
                    ip = self.peer.ip(),
                    host = self.config.hostname,
                )
                .into_bytes(),
            })
            .collect();
        let (blob, size) = (parcel.blob, parcel.size);
        let started = std::time::Instant::now();
        let delivered = self.store.deliver(parcel).await;
        metrics::histogram!("pophost_store_seconds", "op" => "deliver")
            .record(started.elapsed().as_secs_f64());
        let outcomes = match delivered {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::warn!(error = %e, "delivery failed");
                self.discard(blob).await;
                return Ok(all("451 4.3.0 Temporary storage failure"));
            }
        };
        let mut replies = String::new();
        for ((address, _), outcome) in rcpts.iter().zip(outcomes) {
            let line = match outcome {
                Ok(()) => {
                    metrics::counter!("pophost_messages_delivered_total").increment(1);
                    format!("250 2.0.0 <{address}> Delivered")
                }
                // The MTA's retry of a delivery it never saw acknowledged: the mailbox has it.
                Err(StoreError::Duplicate) => {
                    metrics::counter!("pophost_lmtp_deduplicated_total").increment(1);
                    format!("250 2.0.0 <{address}> Already delivered")
                }
                Err(e @ (StoreError::QuotaExceeded | StoreError::QuotaExceededTemporary)) => {
                    refused(address, e)
                }
                Err(StoreError::NotFound(_)) => format!("550 5.1.1 <{address}> No such user"),
                Err(e) => {
                    tracing::warn!(error = %e, %address, "delivery failed");
                    format!("451 4.3.0 <{address}> Temporary failure")
                }
            };
            tracing::info!(%address, size, reply = %line, "delivery");
            replies.push_str(&line);
            replies.push_str("\r\n");
        }
        Ok(replies)
    }

    /// Reads one command line into `line` (without CRLF). `Ok(false)`: the line was too long
    /// and has been skipped. A bare LF ends a command line too, as many clients send it; that
    /// cannot let message text in as a command, since after DATA's 354 only the `DataDecoder`
    /// reads, up to `CRLF . CRLF`.
    async fn read_line<R: AsyncRead + Unpin>(
        &self,
        rd: &mut BufReader<R>,
        line: &mut Vec<u8>,
    ) -> Result<bool, Stop> {
        line.clear();
        let mut too_long = false;
        loop {
            let buf = tokio::select! {
                _ = self.abort.cancelled() => return Err(Stop::Abort),
                read = tokio::time::timeout(self.config.idle_timeout, rd.fill_buf()) => match read {
                    Err(_) => return Err(Stop::Idle),
                    Ok(Err(e)) => return Err(Stop::Io(e)),
                    Ok(Ok([])) => return Err(Stop::Eof),
                    Ok(Ok(buf)) => buf,
                },
            };
            let (take, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let room = MAX_COMMAND_LINE.saturating_sub(line.len());
            too_long |= take > room;
            line.extend_from_slice(&buf[..take.min(room)]);
            rd.consume(take);
            if end {
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                return Ok(!too_long);
            }
        }
    }
}

/// The SMTP reply for a recipient the quota check refused (at RCPT or at DATA): permanent by
/// default, temporary where the domain asks senders to retry (`--quota-tempfail`); `None` for
/// any other error. The Postfix policy service (`mta::policy`) answers in these same words, so a
/// sender sees one text whichever of the two refused the mail.
pub fn quota_reply(address: &Address, e: &StoreError) -> Option<String> {
    match e {
        StoreError::QuotaExceeded => Some(format!("552 5.2.2 <{address}> Mailbox full")),
        StoreError::QuotaExceededTemporary => Some(format!(
            "452 4.2.2 <{address}> Mailbox full, try again later"
        )),
        _ => None,
    }
}

/// `quota_reply`, or a temporary failure for any other error.
fn refused(address: &Address, e: StoreError) -> String {
    quota_reply(address, &e).unwrap_or_else(|| {
        tracing::warn!(error = %e, %address, "quota check failed");
        format!("451 4.3.0 <{address}> Temporary failure")
    })
}

/// Keeps client-supplied text from breaking the header block it is copied into.
/// `header_safe` for an SMTPUTF8 transaction, whose headers may be UTF-8 (RFC 6532): letters
/// and digits of any script stay, so `Return-Path: <jöhn@bücher.example>` is what was sent;
/// anything else outside printable ASCII (controls, bidi overrides, spaces) still becomes `?`.
fn utf8_header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || (!c.is_ascii() && c.is_alphanumeric()) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

fn received_date() -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    time::OffsetDateTime::now_utc()
        .format(format)
        .unwrap_or_default()
}

//! Minimal POP3 and LMTP clients: just what the scenarios send, with replies checked and
//! multi-line responses consumed by scanning for the terminator (no per-line work), so the loader
//! stays cheap next to the server it measures. POP3 runs over plain TCP or implicit TLS (POP3S):
//! one `Tls` (one rustls `ClientConfig`, one session store) is shared by every connection.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsConnector;

/// A byte stream a POP3 client runs over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Implicit TLS for every connection of a run: TLS 1.3 only (ring), the server checked against
/// the certificates of a PEM file (a CA, or the server's own certificate if it is one), and
/// session resumption by tickets on or off. Cheap to share: every connection uses the same
/// `ClientConfig`, so with resumption on a reconnecting client finds the tickets an earlier
/// connection (of any client) received.
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// `ca`: PEM file of trusted certificates; `name`: the server name to send (SNI) and check.
    pub fn new(ca: &Path, name: &str, resume: bool) -> Result<Self> {
        let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(c.with_context(|| format!("{}: bad PEM", ca.display()))?)
                .with_context(|| format!("{}: certificate refused", ca.display()))?;
        }
        if roots.is_empty() {
            bail!("{}: no certificate", ca.display());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = if resume {
            // Tickets are single-use and kept per server name: room for many, as every
            // connection of the run talks to the same name.
            Resumption::store(Arc::new(rustls::client::ClientSessionMemoryCache::new(
                4096,
            )))
        } else {
            Resumption::disabled()
        };
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name: ServerName::try_from(name.to_string())
                .with_context(|| format!("bad server name {name:?}"))?,
        })
    }
}

/// One POP3 connection.
pub struct Pop3 {
    s: BufReader<Box<dyn Io>>,
    line: Vec<u8>,
    out: Vec<u8>,
    /// With TLS: whether the handshake resumed an earlier session.
    pub resumed: Option<bool>,
}

impl Pop3 {
    /// Connects (with `tls`, completing the TLS handshake) and reads the greeting.
    pub async fn connect_with(addr: &str, tls: Option<&Tls>) -> Result<Self> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        let (io, resumed): (Box<dyn Io>, _) = match tls {
            None => (Box::new(s), None),
            Some(t) => {
                let s = t
                    .connector
                    .connect(t.name.clone(), s)
                    .await
                    .with_context(|| format!("TLS handshake with {addr}"))?;
                let kind = s.get_ref().1.handshake_kind();
                (Box::new(s), Some(kind == Some(HandshakeKind::Resumed)))
            }
        };
        let mut c = Pop3 {
            s: BufReader::with_capacity(64 * 1024, io),
            line: Vec::new(),
            out: Vec::new(),
            resumed,
        };
        c.status().await.context("greeting")?;
        Ok(c)
    }

    /// Connects over plain TCP and reads the greeting.
    pub async fn connect(addr: &str) -> Result<Self> {
        Self::connect_with(addr, None).await
    }

    /// Reads one status line; `Err` unless it is `+OK`. Returns the text after `+OK `.
    async fn status(&mut self) -> Result<String> {
        self.line.clear();
        let n = self.s.read_until(b'\n', &mut self.line).await?;
        if n == 0 {
            bail!("connection closed");
        }
        if !self.line.starts_with(b"+OK") {
            bail!(
                "server said {:?}",
                String::from_utf8_lossy(&self.line).trim_end()
            );
        }
        Ok(
            String::from_utf8_lossy(self.line.get(3..).unwrap_or_default())
                .trim()
                .to_string(),
        )
    }

    /// Sends one command line (in one write: one TLS record) and reads its status line.
    pub async fn cmd(&mut self, line: &str) -> Result<String> {
        self.out.clear();
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.s.get_mut().write_all(&self.out).await?;
        self.s.get_mut().flush().await?;
        self.status()
            .await
            .with_context(|| line.split(' ').next().unwrap_or("").to_string())
    }

    /// USER then PASS.
    pub async fn login(&mut self, user: &str, pass: &str) -> Result<()> {
        self.cmd(&format!("USER {user}")).await?;
        self.cmd(&format!("PASS {pass}")).await?;
        Ok(())
    }

    /// STAT: (messages, octets).
    pub async fn stat(&mut self) -> Result<(u64, u64)> {
        let t = self.cmd("STAT").await?;
        let mut it = t.split_whitespace().map(|x| x.parse::<u64>());
        match (it.next(), it.next()) {
            (Some(Ok(n)), Some(Ok(o))) => Ok((n, o)),
            _ => bail!("bad STAT reply {t:?}"),
        }
    }

    /// A multi-line command (UIDL, RETR n, LIST): returns the bytes of the body as sent
    /// (dot-stuffed, terminator excluded).
    pub async fn multi(&mut self, line: &str) -> Result<u64> {
        self.cmd(line).await?;
        self.body().await
    }

    /// Consumes a multi-line body up to `CRLF . CRLF`. The status line's CRLF counts as the
    /// first line start.
    async fn body(&mut self) -> Result<u64> {
        const END: &[u8] = b"\r\n.\r\n";
        // The last (up to 4) bytes seen, to find a terminator split across reads; starts as the
        // status line's CRLF so an empty body (".\r\n") is found too.
        let mut tail: Vec<u8> = b"\r\n".to_vec();
        let mut consumed = 0u64;
        loop {
            let buf = self.s.fill_buf().await?;
            if buf.is_empty() {
                bail!("connection closed in a multi-line reply");
            }
            let mut seam = tail.clone();
            seam.extend_from_slice(&buf[..buf.len().min(4)]);
            let end = match memchr::memmem::find(&seam, END) {
                Some(i) if i < tail.len() => Some(i + END.len() - tail.len()),
                _ => memchr::memmem::find(buf, END).map(|i| i + END.len()),
            };
            if let Some(end) = end {
                self.s.consume(end);
                return Ok((consumed + end as u64).saturating_sub(3));
            }
            let n = buf.len();
            tail = if n >= 4 {
                buf[n - 4..].to_vec()
            } else {
                seam[seam.len().saturating_sub(4)..].to_vec()
            };
            consumed += n as u64;
            self.s.consume(n);
        }
    }

    /// QUIT, reading its reply.
    pub async fn quit(mut self) -> Result<()> {
        self.cmd("QUIT").await?;
        Ok(())
    }
}

/// One LMTP connection after LHLO.
pub struct Lmtp {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    line: Vec<u8>,
}

impl Lmtp {
    /// Connects, reads the greeting and sends LHLO.
    pub async fn connect(addr: &str) -> Result<Self> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = Lmtp {
            r: BufReader::new(r),
            w,
            line: Vec::new(),
        };
        c.reply(b'2').await.context("greeting")?;
        c.w.write_all(b"LHLO pop3-bench.example\r\n").await?;
        c.reply(b'2').await.context("LHLO")?;
        Ok(c)
    }

    /// Reads one (possibly multi-line) reply; `Err` unless its code starts with `class`.
    async fn reply(&mut self, class: u8) -> Result<()> {
        loop {
            self.line.clear();
            if self.r.read_until(b'\n', &mut self.line).await? == 0 {
                bail!("connection closed");
            }
            if self.line.first() != Some(&class) {
                bail!(
                    "server said {:?}",
                    String::from_utf8_lossy(&self.line).trim_end()
                );
            }
            if self.line.get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }

    /// One transaction to one recipient; `message` must be CRLF text with no line starting with
    /// a dot. Returns once the recipient's final reply (the acknowledgement) has arrived.
    pub async fn deliver(&mut self, rcpt: &str, message: &[u8]) -> Result<()> {
        let env = format!("MAIL FROM:<bench@pop3-bench.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
        // PIPELINING (RFC 2920): both servers advertise it.
        self.w.write_all(env.as_bytes()).await?;
        self.reply(b'2').await.context("MAIL")?;
        self.reply(b'2').await.context("RCPT")?;
        self.reply(b'3').await.context("DATA")?;
        self.w.write_all(message).await?;
        self.w.write_all(b".\r\n").await?;
        self.reply(b'2').await.context("end of DATA")?;
        Ok(())
    }
}

/// A message of about `size` octets, unique by `seq`, with no line starting with a dot.
pub fn message(size: usize, seq: u64) -> Vec<u8> {
    let mut m = format!(
        "From: Bench <bench@pop3-bench.example>\r\nTo: <rcpt@bench.example>\r\nSubject: bench message {seq}\r\nMessage-ID: <{seq}.{}@pop3-bench.example>\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n\r\n",
        std::process::id()
    )
    .into_bytes();
    let line =
        b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    if m.len() < size {
        let pad = size - m.len();
        if pad >= 3 {
            m.extend(std::iter::repeat_n(b'x', pad - 2));
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// The multi-line reader finds the terminator wherever reads split it.
    #[tokio::test]
    async fn body_terminator_across_reads() {
        for split in 0..12 {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap().to_string();
            let server = tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                s.write_all(b"+OK hi\r\n").await.unwrap();
                let mut buf = [0u8; 64];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                    .await
                    .unwrap();
                let reply = b"+OK 12 octets\r\nab\r\n..c\r\n.\r\n+OK bye\r\n";
                let (a, b) = reply.split_at(15 + split);
                s.write_all(a).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                s.write_all(b).await.unwrap();
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            });
            let mut c = Pop3::connect(&addr).await.unwrap();
            assert_eq!(c.multi("RETR 1").await.unwrap(), 9, "split {split}");
            c.quit().await.unwrap();
            server.await.unwrap();
        }
    }

    #[test]
    fn message_size_and_no_leading_dots() {
        for size in [200, 4096, 50_000] {
            let m = message(size, 7);
            assert!(m.len().abs_diff(size) <= 2, "{} vs {size}", m.len());
            assert!(m.ends_with(b"\r\n"));
            assert!(!m.windows(3).any(|w| w == b"\n.\r" || w.starts_with(b"\n.")));
        }
    }
}

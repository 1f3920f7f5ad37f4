//! A minimal POP3 client for reading a maildrop: greeting, STLS, USER/PASS or AUTH PLAIN, UIDL,
//! LIST, RETR, QUIT. Nothing it sends changes the maildrop (no DELE). Everything the server
//! sends is bounded (`Limits`): a line, a listing, a message, and the time each read may take.

use std::io;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Error;
use crate::source::{Limits, Security, Source};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while STLS swaps one for the other.
    Gone,
}

impl Transport {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf).await,
            Transport::Tls(s) => s.read(buf).await,
            Transport::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.write_all(data).await,
            Transport::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Transport::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

/// A status line: `+OK …` or `-ERR …`, without the line ending.
#[derive(Debug)]
pub(crate) struct Status {
    pub ok: bool,
    pub text: String,
}

/// How the server answered a login.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Login {
    Accepted,
    /// `-ERR` to the password: the server's text.
    Refused(String),
}

/// A connection to the old server, logged in or not.
pub(crate) struct Client {
    io: Transport,
    buf: Vec<u8>,
    /// Start of the bytes not yet consumed in `buf`.
    pos: usize,
    /// How far `buf` has been searched for a line end (so a long line is scanned once).
    scanned: usize,
    limits: Limits,
}

/// Server text made safe to print: no control characters, at most 200 characters.
pub(crate) fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}

impl Client {
    /// Connects, secures the connection as `source` says and reads the greeting.
    pub async fn connect(source: &Source) -> Result<Client, Error> {
        let limits = source.limits;
        let addr = format!("{}:{}", source.host, source.port);
        let tcp = tokio::time::timeout(
            limits.connect,
            TcpStream::connect((source.host.as_str(), source.port)),
        )
        .await
        .map_err(|_| Error::Timeout("connecting", limits.connect))?
        .map_err(|e| Error::Connect {
            addr: addr.clone(),
            source: e,
        })?;
        let _ = tcp.set_nodelay(true);
        let mut client = Client {
            io: Transport::Plain(tcp),
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            scanned: 0,
            limits,
        };
        if source.security == Security::Implicit {
            client.start_tls(source).await?;
        }
        let greeting = client.status().await?;
        if !greeting.ok {
            return Err(Error::Unavailable(greeting.text));
        }
        if source.security == Security::StartTls {
            let reply = client.command("STLS").await?;
            if !reply.ok {
                return Err(Error::NoStls(reply.text));
            }
            // Anything sent after the +OK and before the handshake could be injected by a man
            // in the middle and taken as a reply inside TLS (CVE-2011-0411 and kin).
            if client.pos < client.buf.len() {
                return Err(Error::Protocol(
                    "the old server sent data after its STLS reply, before TLS".into(),
                ));
            }
            client.start_tls(source).await?;
        }
        Ok(client)
    }

    async fn start_tls(&mut self, source: &Source) -> Result<(), Error> {
        let Transport::Plain(tcp) = std::mem::replace(&mut self.io, Transport::Gone) else {
            return Err(Error::Protocol("TLS started twice".into()));
        };
        let connector = TlsConnector::from(source.tls.clone());
        let tls = tokio::time::timeout(
            self.limits.io,
            connector.connect(source.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| Error::Timeout("the TLS handshake", self.limits.io))?
        .map_err(|e| Error::Tls {
            host: source.host.clone(),
            source: e,
        })?;
        self.io = Transport::Tls(Box::new(tls));
        Ok(())
    }

    /// Reads more from the server into `buf`.
    async fn fill(&mut self) -> Result<(), Error> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.scanned = 0;
            self.pos = 0;
        } else if self.pos >= 64 * 1024 {
            self.buf.drain(..self.pos);
            self.scanned = self.scanned.saturating_sub(self.pos);
            self.pos = 0;
        }
        let end = self.buf.len();
        self.buf.resize(end + READ_CHUNK, 0);
        let read = tokio::time::timeout(self.limits.io, self.io.read(&mut self.buf[end..])).await;
        let n = match read {
            Err(_) => {
                self.buf.truncate(end);
                return Err(Error::Timeout("waiting for the old server", self.limits.io));
            }
            Ok(Err(e)) => {
                self.buf.truncate(end);
                return Err(Error::Io(e));
            }
            Ok(Ok(n)) => n,
        };
        self.buf.truncate(end + n);
        if n == 0 {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The next line, line ending included, as a range of `buf`; `Err(None)` when it would be
    /// longer than `max` octets (the caller says what that means).
    async fn line_range(&mut self, max: usize) -> Result<std::ops::Range<usize>, Option<Error>> {
        loop {
            let from = self.scanned.max(self.pos);
            if let Some(i) = self.buf[from..].iter().position(|&b| b == b'\n') {
                let range = self.pos..from + i + 1;
                self.pos = range.end;
                self.scanned = self.pos;
                if range.len() > max {
                    return Err(None);
                }
                return Ok(range);
            }
            self.scanned = self.buf.len();
            if self.buf.len() - self.pos > max {
                return Err(None);
            }
            self.fill().await.map_err(Some)?;
        }
    }

    /// A status or listing line without its line ending.
    async fn line(&mut self) -> Result<Vec<u8>, Error> {
        let max = self.limits.line;
        let range = self.line_range(max).await.map_err(|e| {
            e.unwrap_or_else(|| {
                Error::Protocol(format!("the old server sent a line over {max} octets"))
            })
        })?;
        let line = &self.buf[range];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        Ok(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
    }

    async fn status(&mut self) -> Result<Status, Error> {
        let line = self.line().await?;
        if line.starts_with(b"+OK") {
            Ok(Status {
                ok: true,
                text: printable(&line),
            })
        } else if line.starts_with(b"-ERR") {
            Ok(Status {
                ok: false,
                text: printable(&line),
            })
        } else {
            Err(Error::Protocol(format!(
                "expected +OK or -ERR, got {:?}",
                printable(&line)
            )))
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), Error> {
        let data = format!("{line}\r\n");
        tokio::time::timeout(self.limits.io, self.io.write_all(data.as_bytes()))
            .await
            .map_err(|_| Error::Timeout("sending to the old server", self.limits.io))?
            .map_err(Error::Io)
    }

    async fn command(&mut self, line: &str) -> Result<Status, Error> {
        self.send(line).await?;
        self.status().await
    }

    /// Logs in with USER/PASS, or AUTH PLAIN when the server refuses USER.
    pub async fn login(&mut self, login: &str, password: &str) -> Result<Login, Error> {
        // A line break would end the command early and let the rest be read as another.
        if [login, password]
            .iter()
            .any(|s| s.contains(['\r', '\n', '\0']))
        {
            return Err(Error::Invalid(
                "the login or password contains a line break or NUL".into(),
            ));
        }
        if login.is_empty() {
            return Err(Error::Invalid("the login is empty".into()));
        }
        let user = self.command(&format!("USER {login}")).await?;
        if user.ok {
            let pass = self.command(&format!("PASS {password}")).await?;
            return refused_or_unavailable(pass);
        }
        self.send("AUTH PLAIN").await?;
        let challenge = self.line().await?;
        if challenge.starts_with(b"-ERR") {
            return Err(Error::Protocol(format!(
                "the old server refused USER ({}) and AUTH PLAIN ({})",
                user.text,
                printable(&challenge)
            )));
        }
        // RFC 5034: PLAIN's challenge is empty, `+ ` (a bare `+` from some servers).
        if !(challenge == b"+" || challenge.starts_with(b"+ ")) {
            return Err(Error::Protocol(format!(
                "AUTH PLAIN answered {:?} instead of a challenge",
                printable(&challenge)
            )));
        }
        let response = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{login}\0{password}").as_bytes());
        let reply = self.command(&response).await?;
        refused_or_unavailable(reply)
    }

    /// `(message number, unique-id)` of every message, from UIDL.
    pub async fn uidl(&mut self) -> Result<Vec<(u32, String)>, Error> {
        let status = self.command("UIDL").await?;
        if !status.ok {
            return Err(Error::Protocol(format!(
                "the old server does not list unique-ids (UIDL: {}): there are no UIDLs to keep",
                status.text
            )));
        }
        self.listing("UIDL").await
    }

    /// `(message number, octets)` of every message, from LIST.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, Error> {
        let status = self.command("LIST").await?;
        if !status.ok {
            return Err(Error::Protocol(format!("LIST: {}", status.text)));
        }
        self.listing("LIST")
            .await?
            .into_iter()
            .map(|(n, size)| {
                // Some servers add more after the size; only the number counts.
                let size = size.split(' ').next().unwrap_or_default();
                size.parse::<u64>()
                    .map(|s| (n, s))
                    .map_err(|_| Error::Protocol(format!("LIST: bad size {size:?}")))
            })
            .collect()
    }

    /// The lines of a multi-line `n value` listing.
    async fn listing(&mut self, what: &str) -> Result<Vec<(u32, String)>, Error> {
        let mut out = Vec::new();
        loop {
            let line = self.line().await?;
            if line == b"." {
                return Ok(out);
            }
            if out.len() >= self.limits.messages {
                return Err(Error::Protocol(format!(
                    "{what} lists more than {} messages",
                    self.limits.messages
                )));
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            let text = std::str::from_utf8(line).ok();
            let entry = text.and_then(|t| {
                let (n, value) = t.trim().split_once(' ')?;
                let n = n.parse::<u32>().ok().filter(|n| *n > 0)?;
                let value = value.trim();
                (!value.is_empty()).then(|| (n, value.to_string()))
            });
            match entry {
                Some(e) => out.push(e),
                None => {
                    return Err(Error::Protocol(format!(
                        "{what}: bad line {:?}",
                        printable(line)
                    )));
                }
            }
        }
    }

    /// Message `n`, unstuffed, every line ending CRLF; `TooLarge` past `limits.message` (the
    /// connection is then unusable: the rest of the message was not read).
    pub async fn retr(&mut self, n: u32) -> Result<Vec<u8>, Error> {
        let status = self.command(&format!("RETR {n}")).await?;
        if !status.ok {
            return Err(Error::Protocol(format!("RETR {n}: {}", status.text)));
        }
        let cap = self.limits.message;
        let mut out = Vec::new();
        loop {
            // A line may be two octets longer than what is left: its ending, and a stuffed dot.
            let max = cap - out.len() + 3;
            let range = self.line_range(max).await.map_err(|e| {
                e.unwrap_or(Error::TooLarge {
                    number: n,
                    octets: None,
                    limit: cap,
                })
            })?;
            let line = &self.buf[range];
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line == b"." {
                return Ok(out);
            }
            let line = line.strip_prefix(b".").unwrap_or(line);
            if out.len() + line.len() + 2 > cap {
                return Err(Error::TooLarge {
                    number: n,
                    octets: None,
                    limit: cap,
                });
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Ends the session. With no DELE sent, the server's UPDATE removes nothing.
    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
    }
}

/// `Accepted` for +OK; `Refused` for a -ERR about the credentials; `Unavailable` for a -ERR
/// that says the account cannot be used now whatever the password (RFC 2449/3206 codes).
fn refused_or_unavailable(reply: Status) -> Result<Login, Error> {
    if reply.ok {
        return Ok(Login::Accepted);
    }
    let code = reply
        .text
        .strip_prefix("-ERR")
        .map(str::trim_start)
        .and_then(|t| t.strip_prefix('['))
        .and_then(|t| t.split_once(']'))
        .map(|(code, _)| code.to_ascii_uppercase());
    match code.as_deref() {
        Some("IN-USE" | "LOGIN-DELAY" | "SYS/TEMP" | "SYS/PERM") => {
            Err(Error::Unavailable(reply.text))
        }
        _ => Ok(Login::Refused(reply.text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(text: &str) -> Status {
        Status {
            ok: text.starts_with("+OK"),
            text: text.into(),
        }
    }

    #[test]
    fn login_replies() {
        assert_eq!(
            refused_or_unavailable(status("+OK Logged in.")).expect("ok"),
            Login::Accepted
        );
        assert!(matches!(
            refused_or_unavailable(status("-ERR [AUTH] Authentication failed.")),
            Ok(Login::Refused(_))
        ));
        assert!(matches!(
            refused_or_unavailable(status("-ERR invalid password")),
            Ok(Login::Refused(_))
        ));
        for busy in [
            "-ERR [IN-USE] locked",
            "-ERR [sys/temp] later",
            "-ERR [LOGIN-DELAY] wait",
        ] {
            assert!(
                matches!(
                    refused_or_unavailable(status(busy)),
                    Err(Error::Unavailable(_))
                ),
                "{busy}"
            );
        }
    }

    #[test]
    fn server_text_is_made_printable() {
        assert_eq!(printable(b"-ERR \x1b[31mred\x07"), "-ERR ?[31mred?");
        assert_eq!(printable(&[b'x'; 500]).len(), 200);
    }
}

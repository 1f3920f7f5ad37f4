//! The accept loop and the admission of one connection under the listener's `ProxyPolicy`.
//!
//! With `ProxyPolicy::Required`, a connection from a trusted network must start with a valid
//! PROXY header (within `HEADER_TIMEOUT`), or it is closed without a greeting; the handler then
//! sees the client from the header. A connection from anywhere else is served directly, and its
//! stream refuses a PROXY header should the peer send one (see `stream`). With
//! `ProxyPolicy::Off` connections are served as they come.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::network::Network;
use crate::proxy::{self, Header, HeaderError};
use crate::stream::Stream;

/// How long a trusted proxy has to deliver its header. Proxies send it at once on connecting.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an over-cap client may take to receive the busy line.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a listener takes PROXY protocol headers, and from whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyPolicy {
    /// No PROXY protocol: every connection is served as it comes, its TCP peer is the client.
    #[default]
    Off,
    /// Connections from `trusted` networks (the proxies) must start with a PROXY v1 or v2
    /// header naming the client. Other sources are served directly; a PROXY header from one of
    /// them closes its connection.
    Required { trusted: Vec<Network> },
}

impl ProxyPolicy {
    /// True if a connection from `ip` must start with a PROXY header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            ProxyPolicy::Off => false,
            ProxyPolicy::Required { trusted } => trusted.iter().any(|n| n.contains(ip)),
        }
    }
}

/// Settings of one listener.
#[derive(Debug, Clone)]
pub struct Options {
    /// The protocol's name in log lines (`pop3`, `lmtp`).
    pub name: &'static str,
    /// Connections handled at once; more are sent `busy_reply` and closed.
    pub max_connections: usize,
    /// How long handlers may go on after shutdown starts before `abort` is cancelled.
    pub grace: Duration,
    /// The protocol's "too busy" line, CRLF included.
    pub busy_reply: &'static [u8],
    pub proxy: ProxyPolicy,
}

/// An admitted connection.
#[derive(Debug)]
pub struct Conn {
    /// Positioned at the first byte after any PROXY header.
    pub stream: Stream,
    /// The real client: from the PROXY header when there was one, else the TCP peer.
    pub peer: SocketAddr,
    /// The address the client connected to (the proxy's, when proxied).
    pub local: SocketAddr,
    /// The proxy's own address, when the connection came through one.
    pub proxy: Option<SocketAddr>,
}

/// Accepts connections on `listener` until `shutdown` is cancelled and runs
/// `handler(conn, abort)` for each admitted one, in its own task. After `shutdown`, handlers get
/// `options.grace` to finish; then `abort` (the token each handler got) is cancelled and the
/// rest are awaited. Returns when every handler has returned.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    options: Options,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(Conn, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = options.name;
    let tracker = TaskTracker::new();
    let abort = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let policy = Arc::new(options.proxy);
    let handler = Arc::new(handler);

    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, tcp_peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Every reply is written whole, so Nagle only delays: a TLS server's session tickets
        // and the greeting right after them are two small writes, and the greeting waited for
        // the client's delayed ACK (~40 ms per POP3S connection).
        let _ = stream.set_nodelay(true);
        metrics::counter!("pophost_connections_total", "listener" => name).increment(1);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("pophost_connections_refused_total", "listener" => name, "reason" => "busy")
                .increment(1);
            let busy = options.busy_reply;
            tracker.spawn(async move {
                let _ = tokio::time::timeout(BUSY_WRITE_TIMEOUT, stream.write_all(busy)).await;
            });
            continue;
        };
        let (policy, handler, abort) = (policy.clone(), handler.clone(), abort.clone());
        tracker.spawn(async move {
            let _slot = slot;
            let _open = OpenGauge::new(name);
            let admitted = tokio::select! {
                _ = abort.cancelled() => return,
                admitted = admit(stream, tcp_peer, &policy, name) => admitted,
            };
            match admitted {
                Ok(conn) => handler(conn, abort).await,
                Err(refusal) => tracing::info!(
                    listener = name,
                    tcp_peer = %tcp_peer,
                    "closing connection: {refusal}"
                ),
            }
        });
    }

    drop(listener);
    tracker.close();
    if tokio::time::timeout(options.grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::info!(
            listener = name,
            sessions = tracker.len(),
            "grace period over, ending sessions"
        );
        abort.cancel();
        tracker.wait().await;
    }
}

/// `pophost_connections_open{listener}`: up while a connection holds a slot, down when its task
/// ends however it ends.
struct OpenGauge(&'static str);

impl OpenGauge {
    fn new(name: &'static str) -> Self {
        metrics::gauge!("pophost_connections_open", "listener" => name).increment(1.0);
        OpenGauge(name)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics::gauge!("pophost_connections_open", "listener" => self.0).decrement(1.0);
    }
}

/// Why a connection was closed before its handler ran.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("trusted proxy address, but {0}")]
    Header(HeaderError),
    #[error("cannot read the local address: {0}")]
    Local(std::io::Error),
}

/// Applies `policy` to a fresh connection from `tcp_peer`.
async fn admit(
    mut stream: TcpStream,
    tcp_peer: SocketAddr,
    policy: &ProxyPolicy,
    name: &'static str,
) -> Result<Conn, Refusal> {
    let local = stream.local_addr().map_err(Refusal::Local)?;
    if !policy.trusts(tcp_peer.ip()) {
        let stream = match policy {
            ProxyPolicy::Off => Stream::direct(stream),
            ProxyPolicy::Required { .. } => Stream::refusing_proxy(stream, name, tcp_peer),
        };
        return Ok(Conn {
            stream,
            peer: tcp_peer,
            local,
            proxy: None,
        });
    }
    let header = match tokio::time::timeout(HEADER_TIMEOUT, proxy::read_header(&mut stream)).await {
        Ok(Ok(header)) => header,
        Ok(Err(e)) => return Err(Refusal::Header(e)),
        Err(_) => return Err(Refusal::Header(HeaderError::Timeout)),
    };
    let (peer, local) = match header {
        Header::Proxied { client, server } => (client, server),
        Header::Local => (tcp_peer, local),
    };
    tracing::debug!(listener = name, %tcp_peer, client = %peer, "PROXY header accepted");
    Ok(Conn {
        stream: Stream::direct(stream),
        peer,
        local,
        proxy: Some(tcp_peer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    const HEADER_V1: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 110\r\n";

    /// A listener whose handler greets with `peer local proxy` and then echoes one line.
    struct Echo {
        addr: SocketAddr,
        handled: Arc<AtomicUsize>,
        shutdown: CancellationToken,
        done: tokio::task::JoinHandle<()>,
    }

    /// `trusted: None` is `ProxyPolicy::Off`.
    async fn start(trusted: Option<&[&str]>, max_connections: usize) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let proxy = match trusted {
            None => ProxyPolicy::Off,
            Some(nets) => ProxyPolicy::Required {
                trusted: nets.iter().map(|n| n.parse().expect("network")).collect(),
            },
        };
        let options = Options {
            name: "test",
            max_connections,
            grace: Duration::from_millis(200),
            busy_reply: b"BUSY\r\n",
            proxy,
        };
        let handled = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let count = handled.clone();
        let done = tokio::spawn(serve(
            listener,
            options,
            shutdown.clone(),
            move |conn, abort| {
                count.fetch_add(1, Ordering::SeqCst);
                echo(conn, abort)
            },
        ));
        Echo {
            addr,
            handled,
            shutdown,
            done,
        }
    }

    async fn echo(conn: Conn, abort: CancellationToken) {
        let Conn {
            stream,
            peer,
            local,
            proxy,
        } = conn;
        let mut stream = BufReader::new(stream);
        let hello = format!("{peer} {local} {proxy:?}\r\n");
        if stream.get_mut().write_all(hello.as_bytes()).await.is_err() {
            return;
        }
        let mut line = Vec::new();
        tokio::select! {
            _ = abort.cancelled() => {
                let _ = stream.get_mut().write_all(b"ABORTED\r\n").await;
            }
            read = stream.read_until(b'\n', &mut line) => {
                match read {
                    Ok(_) => {
                        let _ = stream.get_mut().write_all(&line).await;
                    }
                    Err(e) => {
                        let _ = stream.get_mut().write_all(format!("ERROR {e}\r\n").as_bytes()).await;
                    }
                }
            }
        }
    }

    /// Connects, sends `first`, reads the first line, sends `then` and closes its sending side,
    /// and returns all the server sent until it closed, and the client's own address.
    async fn talk(addr: SocketAddr, first: &[u8], then: &[u8]) -> (String, SocketAddr) {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let me = stream.local_addr().expect("local");
        let mut stream = BufReader::new(stream);
        stream.get_mut().write_all(first).await.expect("write");
        let mut all = String::new();
        let mut line = String::new();
        let n = stream.read_line(&mut line).await.unwrap_or(0);
        all.push_str(&line);
        if n > 0 {
            let _ = stream.get_mut().write_all(then).await;
            let _ = stream.get_mut().shutdown().await;
            let mut rest = String::new();
            let _ = stream.read_to_string(&mut rest).await;
            all.push_str(&rest);
        }
        (all, me)
    }

    #[tokio::test]
    async fn connections_are_handed_over_with_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let options = Options {
            name: "test",
            max_connections: 10,
            grace: Duration::from_millis(200),
            busy_reply: b"BUSY\r\n",
            proxy: ProxyPolicy::Off,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let done = tokio::spawn(serve(
            listener,
            options,
            shutdown.clone(),
            move |conn, _| {
                let _ = tx.send(conn.stream.get_ref().nodelay().expect("nodelay"));
                async {}
            },
        ));
        let _client = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(rx.recv().await, Some(true));
        shutdown.cancel();
        done.await.expect("serve");
    }

    #[tokio::test]
    async fn without_a_policy_the_tcp_peer_is_the_client() {
        let echo = start(None, 10).await;
        let (said, me) = talk(echo.addr, b"", b"hi\r\n").await;
        assert_eq!(said, format!("{me} {} None\r\nhi\r\n", echo.addr));
        // PROXY headers are not looked at: they reach the handler as bytes.
        let (said, me) = talk(echo.addr, HEADER_V1, b"").await;
        assert_eq!(
            said,
            format!(
                "{me} {} None\r\n{}",
                echo.addr,
                String::from_utf8_lossy(HEADER_V1)
            )
        );
    }

    #[tokio::test]
    async fn a_trusted_proxy_header_gives_the_client_and_keeps_its_bytes() {
        let echo = start(Some(&["127.0.0.0/8"]), 10).await;
        // Header and the client's first line in one segment.
        let first = [HEADER_V1, b"USER john\r\n"].concat();
        let (said, me) = talk(echo.addr, &first, b"").await;
        assert_eq!(
            said,
            format!("192.0.2.1:56324 198.51.100.2:110 Some({me})\r\nUSER john\r\n")
        );
    }

    #[tokio::test]
    async fn a_v2_local_header_keeps_the_connection_addresses() {
        let echo = start(Some(&["127.0.0.1"]), 10).await;
        let local = [proxy::V2_SIGNATURE.as_slice(), &[0x20, 0x00, 0, 0]].concat();
        let (said, me) = talk(echo.addr, &local, b"ok\r\n").await;
        assert_eq!(said, format!("{me} {} Some({me})\r\nok\r\n", echo.addr));
    }

    #[tokio::test]
    async fn a_trusted_source_without_a_valid_header_is_closed() {
        let echo = start(Some(&["127.0.0.1/32"]), 10).await;
        let (said, _) = talk(echo.addr, b"USER john\r\n", b"").await;
        assert_eq!(said, "");
        let (said, _) = talk(echo.addr, b"PROXY TCP4 300.0.0.1 1.2.3.4 1 2\r\n", b"").await;
        assert_eq!(said, "");
        assert_eq!(echo.handled.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_untrusted_source_is_served_directly_and_may_not_send_a_header() {
        let echo = start(Some(&["10.0.0.0/8"]), 10).await;
        let (said, me) = talk(echo.addr, b"", b"hi\r\n").await;
        assert_eq!(said, format!("{me} {} None\r\nhi\r\n", echo.addr));
        // The first bytes are looked at, and handed on when they are no header, however few.
        let (said, me) = talk(echo.addr, b"", b"P").await;
        assert_eq!(said, format!("{me} {} None\r\nP", echo.addr));
        let (said, me) = talk(echo.addr, b"", b"PROXY\r\n").await;
        assert_eq!(said, format!("{me} {} None\r\nPROXY\r\n", echo.addr));
        // A header, sent early or after the greeting, ends the session at the handler's next read.
        // (Only the first 12 bytes are read: a longer header would leave unread bytes, and the
        // close would then be a reset, which may overtake the reply.)
        let refused = "ERROR PROXY header from an untrusted address\r\n";
        let (said, me) = talk(echo.addr, &HEADER_V1[..12], b"").await;
        assert_eq!(said, format!("{me} {} None\r\n{refused}", echo.addr));
        let (said, me) = talk(echo.addr, b"", proxy::V2_SIGNATURE).await;
        assert_eq!(said, format!("{me} {} None\r\n{refused}", echo.addr));
    }

    #[tokio::test]
    async fn over_the_cap_gets_the_busy_line() {
        let echo = start(None, 1).await;
        let first = TcpStream::connect(echo.addr).await.expect("connect");
        let mut first = BufReader::new(first);
        let mut line = String::new();
        first.read_line(&mut line).await.expect("greeting");
        let (said, _) = talk(echo.addr, b"", b"").await;
        assert_eq!(said, "BUSY\r\n");
        // The slot is free again once the first connection is done.
        first.get_mut().write_all(b"bye\r\n").await.expect("write");
        let mut rest = String::new();
        first.read_to_string(&mut rest).await.expect("read");
        assert_eq!(rest, "bye\r\n");
        let (said, _) = talk(echo.addr, b"", b"again\r\n").await;
        assert!(said.ends_with("again\r\n"), "{said}");
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_then_aborts_after_the_grace_period() {
        let echo = start(None, 10).await;
        let conn = TcpStream::connect(echo.addr).await.expect("connect");
        let mut conn = BufReader::new(conn);
        let mut line = String::new();
        conn.read_line(&mut line).await.expect("greeting");
        echo.shutdown.cancel();
        let started = std::time::Instant::now();
        let mut rest = String::new();
        conn.read_to_string(&mut rest).await.expect("read");
        assert_eq!(rest, "ABORTED\r\n");
        assert!(started.elapsed() >= Duration::from_millis(150));
        echo.done.await.expect("serve returned");
        assert!(TcpStream::connect(echo.addr).await.is_err());
    }
}

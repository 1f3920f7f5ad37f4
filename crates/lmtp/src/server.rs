//! Serving LMTP on a listener: `listener::serve` accepts connections (connection cap, PROXY
//! header, draining on shutdown); this adds the per-connection tracing span. A delivery cut off by
//! the end of the grace period was never acknowledged, so the MTA keeps it and retries.

use std::sync::Arc;
use std::time::Duration;

use listener::{Conn, ProxyPolicy};
use mailstore::Delivery;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::session::Session;

#[derive(Debug, Clone)]
pub struct Config {
    /// Our name in the greeting and in `Received:` lines.
    pub hostname: String,
    /// Largest message accepted, in octets as stored (after CRLF normalisation).
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Connections handled at once; more get `421 4.3.2` and the MTA retries later.
    pub max_connections: usize,
    /// PROXY protocol: off, or headers required from trusted proxies (see `listener`).
    pub proxy: ProxyPolicy,
    /// How long a mailbox that got a message (by Message-ID, envelope sender and the digest of
    /// the data) takes the same message again as already delivered; zero turns that off.
    pub dedup_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 100,
            proxy: ProxyPolicy::default(),
            dedup_window: Duration::from_secs(600),
        }
    }
}

/// Serves LMTP on `listener` until `shutdown` is cancelled, then drains sessions and returns.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn Delivery>,
    config: Config,
    shutdown: CancellationToken,
) {
    let options = listener::Options {
        name: "lmtp",
        max_connections: config.max_connections,
        grace: config.shutdown_grace,
        busy_reply: b"421 4.3.2 Too many connections, try again later\r\n",
        proxy: config.proxy.clone(),
    };
    let config = Arc::new(config);
    listener::serve(listener, options, shutdown, move |conn: Conn, abort| {
        let span = tracing::info_span!("lmtp", peer = %conn.peer, proxy = tracing::field::Empty);
        if let Some(proxy) = conn.proxy {
            span.record("proxy", tracing::field::display(proxy));
        }
        Session::new(store.clone(), config.clone(), conn.peer, abort)
            .run(conn.stream)
            .instrument(span)
    })
    .await;
}

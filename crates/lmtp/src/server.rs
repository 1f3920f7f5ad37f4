//! Accepting LMTP connections and draining them on shutdown. A delivery cut off by the end of
//! the grace period was never acknowledged, so the MTA keeps it and retries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailstore::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves LMTP on `listener` until `shutdown` is cancelled, then drains sessions and returns.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let abort = CancellationToken::new();
    let config = Arc::new(config);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer): (_, SocketAddr) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let session = Session::new(store.clone(), config.clone(), peer, abort.clone());
        tracker.spawn(
            session
                .run(stream)
                .instrument(tracing::info_span!("lmtp", %peer)),
        );
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        abort.cancel();
        tracker.wait().await;
    }
}

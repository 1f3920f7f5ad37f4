//! Accepting connections: a cap on concurrent sessions, the batch renewal of this process's
//! maildrop leases, and graceful shutdown (stop accepting, let sessions finish until a deadline,
//! then end the rest with `-ERR [SYS/TEMP]`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mailstore::Store;
use tenancy::Authenticator;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::session::Session;

/// Settings of the POP3 listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// RFC 1939 autologout: an idle session is closed (without UPDATE) after this long.
    pub idle_timeout: Duration,
    /// How long sessions may go on after shutdown starts.
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    /// How often this process renews its maildrop leases; well under the lease TTL.
    pub lease_renewal: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 1000,
            lease_renewal: Duration::from_secs(10),
        }
    }
}

/// What sessions share.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Authenticator>,
}

/// Serves POP3 on `listener` until `shutdown` is cancelled, then drains sessions and returns.
pub async fn run(
    listener: TcpListener,
    services: Services,
    config: Config,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    // Fired when the grace period ends: sessions still running are told to go.
    let abort = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let next_id = AtomicU64::new(1);

    let renewer = tokio::spawn(renew_leases(
        services.store.clone(),
        config.lease_renewal,
        abort.clone(),
    ));

    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracker.spawn(async move {
                let busy =
                    stream.write_all(b"-ERR [SYS/TEMP] too many connections, try again later\r\n");
                let _ = tokio::time::timeout(Duration::from_secs(5), busy).await;
            });
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("pop3", session = id, %peer, user = tracing::field::Empty);
        let session = Session::new(services.clone(), config.clone(), abort.clone());
        tracker.spawn(
            async move {
                let _slot = slot;
                session.run(stream).await;
            }
            .instrument(span),
        );
    }

    drop(listener);
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::info!(
            sessions = tracker.len(),
            "grace period over, ending sessions"
        );
        abort.cancel();
        tracker.wait().await;
    }
    abort.cancel();
    let _ = renewer.await;
}

async fn renew_leases(store: Arc<dyn Store>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = store.renew_leases().await {
            tracing::warn!(error = %e, "renewing maildrop leases failed");
        }
    }
}

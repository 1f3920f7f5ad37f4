//! The pophost binary's library half: `config` loads settings, `cli` is the command line,
//! `serve` wires the store, the authenticator and the POP3 and LMTP listeners together and
//! runs them until shutdown. Kept as a library so end-to-end tests can start a server in-process.

pub mod cli;
pub mod config;

use std::sync::Arc;

use anyhow::Context;
use mailstore::{PostgresStore, SqliteStore, Store};
use tenancy::Authenticator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Database, Settings};

/// Opens the configured store; `migrate` first applies pending schema migrations.
pub async fn open_store(settings: &Settings, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &settings.database {
        Database::Sqlite(path) => Arc::new(
            SqliteStore::open(path, settings.lock.clone(), migrate)
                .await
                .with_context(|| format!("cannot open database {}", path.display()))?,
        ),
        Database::Postgres(url, pg) => Arc::new(
            PostgresStore::open(url, settings.lock.clone(), pg.clone(), migrate)
                .await
                .context("cannot open the Postgres database")?,
        ),
    })
}

/// Binds the configured addresses, naming the setting when one cannot be bound.
pub async fn bind(settings: &Settings) -> anyhow::Result<(TcpListener, TcpListener)> {
    let pop3 = TcpListener::bind(settings.pop3_listen)
        .await
        .with_context(|| format!("pop3.listen: cannot listen on {}", settings.pop3_listen))?;
    let lmtp = TcpListener::bind(settings.lmtp_listen)
        .await
        .with_context(|| format!("lmtp.listen: cannot listen on {}", settings.lmtp_listen))?;
    Ok((pop3, lmtp))
}

/// Runs POP3 and LMTP on the given listeners until `shutdown`, then drains both. `migrate`
/// applies pending schema migrations first.
pub async fn serve(
    settings: Settings,
    migrate: bool,
    pop3: TcpListener,
    lmtp: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = open_store(&settings, migrate).await?;
    // Locks held by this node's crashed predecessor are freed before the first login.
    store
        .recover()
        .await
        .context("recovering after the previous run")?;
    let auth = tokio::task::spawn_blocking({
        let store = store.clone();
        let n = settings.max_concurrent_hashes;
        move || Authenticator::new(store, n)
    })
    .await??;
    tracing::info!(addr = %pop3.local_addr()?, "POP3 listening");
    tracing::info!(addr = %lmtp.local_addr()?, "LMTP listening");
    let services = pop3_server::Services {
        store: store.clone(),
        auth: Arc::new(auth),
    };
    tokio::join!(
        pop3_server::run(pop3, services, settings.pop3.clone(), shutdown.clone()),
        lmtp::run(lmtp, store, settings.lmtp.clone(), shutdown),
    );
    tracing::info!("stopped");
    Ok(())
}

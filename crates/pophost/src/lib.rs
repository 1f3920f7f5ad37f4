//! The pophost binary's library half: `config` loads settings, `cli` is the command line,
//! `serve` takes the serve lock (`serve_lock`: one server per store), claims its node in the
//! store, wires the store, the authenticator, the TLS certificates and the POP3, POP3S and LMTP
//! listeners together and runs them until shutdown (SIGHUP reloads the certificates). Kept as a
//! library so end-to-end tests can start a server in-process.

pub mod accounts;
pub mod app_passwords;
pub mod bulletins;
pub mod cli;
pub mod config;
pub mod first_login;
pub mod generate;
pub mod import;
pub mod pull;
pub mod retention;
mod serve_lock;
pub mod telemetry;
pub mod traces;

use serve_lock::ServeLock;

use std::sync::Arc;

use anyhow::Context;
use mailstore::{PostgresStore, SqliteStore, Store};
use tenancy::{Authenticator, Migration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Database, Settings, TlsSource};

/// Loads the configured certificates, or makes (once) and loads the self-signed one.
pub fn load_certificates(source: &TlsSource) -> anyhow::Result<Arc<tls::Certificates>> {
    let files = match source {
        TlsSource::Files(files) => files.clone(),
        TlsSource::SelfSigned(dir) => tls::self_signed(dir)?,
    };
    Ok(tls::Certificates::load(files)?)
}

/// SIGHUP re-reads the certificate files; a bad one keeps the old set (and is logged).
async fn reload_on_sighup(certs: Arc<tls::Certificates>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler: certificates will not be reloaded");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {}
        }
        match certs.reload() {
            Ok(()) => tracing::info!("TLS certificates reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS certificates not reloaded; keeping the old ones")
            }
        }
    }
}

/// APOP's verifier when `pop3.apop` is on (loading or making the key file), else `None`.
fn apop_verifier(
    settings: &Settings,
    auth: &Arc<Authenticator>,
) -> anyhow::Result<Option<Arc<tenancy::ApopVerifier>>> {
    if !settings.apop {
        return Ok(None);
    }
    let key =
        tenancy::ApopKey::load_or_create(&settings.apop_key_file).context("auth.apop_key_file")?;
    // The greeting timestamp's `@host` part; any name will do, the machine's own is customary.
    let hostname = hostname().unwrap_or_else(|| "localhost".into());
    tracing::info!("APOP enabled");
    Ok(Some(Arc::new(tenancy::ApopVerifier::new(
        auth.clone(),
        key,
        hostname,
    ))))
}

/// The machine's name (printable ASCII without `>`), when it can be read: `/proc/sys` is hidden
/// from the systemd unit (`ProcSubset=pid`), `/etc/hostname` is not.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'>'))
}

/// Opens the configured store; `migrate` first applies pending schema migrations.
pub async fn open_store(settings: &Settings, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_store_with_pool(settings, migrate).await?.0)
}

/// Reads the store's connection pool usage (for `/metrics`).
type PoolProbe = Box<dyn Fn() -> mailstore::PoolUsage + Send + Sync>;

/// `open_store`, plus a probe of the backend's connection pool.
async fn open_store_with_pool(
    settings: &Settings,
    migrate: bool,
) -> anyhow::Result<(Arc<dyn Store>, PoolProbe)> {
    Ok(match &settings.database {
        Database::Sqlite(path) => {
            let store = Arc::new(
                SqliteStore::open(path, settings.lock.clone(), migrate)
                    .await
                    .with_context(|| format!("cannot open database {}", path.display()))?,
            );
            let probe = store.clone();
            (store, Box::new(move || probe.pool_usage()))
        }
        Database::Postgres(url, pg) => {
            let store = Arc::new(
                PostgresStore::open(url, settings.lock.clone(), pg.clone(), migrate)
                    .await
                    .context("cannot open the Postgres database")?,
            );
            let probe = store.clone();
            (store, Box::new(move || probe.pool_usage()))
        }
    })
}

/// The bound listening sockets (POP3S is bound in `serve`, after the certificates load).
pub struct Listeners {
    pub pop3: TcpListener,
    pub lmtp: TcpListener,
    pub admin: TcpListener,
    pub sasl: MtaListeners,
    pub socketmap: MtaListeners,
    pub policy: MtaListeners,
}

/// An MTA service's TCP listener and UNIX socket, each when configured.
#[derive(Default)]
pub struct MtaListeners {
    pub tcp: Option<TcpListener>,
    pub unix: Option<tokio::net::UnixListener>,
}

impl MtaListeners {
    /// Binds `service`; `key` names its settings in errors (`sasl_service`, `postfix.socketmap`).
    async fn bind(service: &config::MtaService, key: &str) -> anyhow::Result<Self> {
        let tcp = match service.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("{key}.listen: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let unix = match &service.socket {
            Some(path) => {
                let access = mta::serve::SocketAccess {
                    mode: service.socket_mode,
                    owner: service.socket_owner.clone(),
                    group: service.socket_group.clone(),
                };
                Some(mta::serve::bind_unix(path, &access).with_context(|| {
                    format!("{key}.socket: cannot listen on {}", path.display())
                })?)
            }
            None => None,
        };
        Ok(Self { tcp, unix })
    }

    fn log(&self, what: &str) {
        if let Some(addr) = self.tcp.as_ref().and_then(|t| t.local_addr().ok()) {
            tracing::info!(%addr, "{what} listening");
        }
        if let Some(path) = self
            .unix
            .as_ref()
            .and_then(|u| u.local_addr().ok())
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        {
            tracing::info!(socket = path, "{what} listening");
        }
    }
}

/// Serves `handler` on `listeners` with `service`'s limits until `shutdown`.
async fn serve_mta<H: mta::serve::Handler>(
    listeners: MtaListeners,
    name: &'static str,
    service: &config::MtaService,
    grace: std::time::Duration,
    handler: H,
    shutdown: CancellationToken,
) {
    if listeners.tcp.is_none() && listeners.unix.is_none() {
        return;
    }
    let access = mta::serve::Access {
        name,
        max_connections: service.max_connections,
        trusted_networks: service.trusted_networks.clone(),
        grace,
    };
    mta::serve::serve(
        listeners.tcp,
        listeners.unix,
        access,
        Arc::new(handler),
        shutdown,
    )
    .await;
}

/// Binds the configured addresses, naming the setting when one cannot be bound.
pub async fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
    let pop3 = TcpListener::bind(settings.pop3_listen)
        .await
        .with_context(|| format!("pop3.listen: cannot listen on {}", settings.pop3_listen))?;
    let lmtp = TcpListener::bind(settings.lmtp_listen)
        .await
        .with_context(|| format!("lmtp.listen: cannot listen on {}", settings.lmtp_listen))?;
    let admin = TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("admin.listen: cannot listen on {}", settings.admin_listen))?;
    let sasl = MtaListeners::bind(&settings.sasl, "sasl_service").await?;
    let socketmap = MtaListeners::bind(&settings.socketmap, "postfix.socketmap").await?;
    let policy = MtaListeners::bind(&settings.policy, "postfix.policy").await?;
    Ok(Listeners {
        pop3,
        lmtp,
        admin,
        sasl,
        socketmap,
        policy,
    })
}

/// With no admin yet, arms the one-time bootstrap link and prints it: whoever opens it first
/// creates the first super admin (`pophost admin add` is the other way).
async fn announce_bootstrap(
    store: &dyn Store,
    state: &admin_web::AppState,
    addr: std::net::SocketAddr,
    tls: bool,
) -> anyhow::Result<()> {
    if store.count_admins().await? > 0 {
        return Ok(());
    }
    let token = state.arm_bootstrap();
    let scheme = if tls { "https" } else { "http" };
    tracing::warn!(
        "no admin account exists: open {scheme}://{addr}/bootstrap/{token} to create the first \
         super admin (the link works once), or run `pophost admin add EMAIL --super --password-stdin` \
         (the password on standard input)"
    );
    Ok(())
}

/// Runs POP3, LMTP and the admin UI on the given listeners until `shutdown`, then drains them.
/// `migrate` applies pending schema migrations first.
pub async fn serve(
    settings: Settings,
    migrate: bool,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Listeners {
        pop3,
        lmtp,
        admin,
        sasl,
        socketmap,
        policy,
    } = listeners;
    // Before the store is touched: a second server on it would free the first one's locks.
    let serve_lock = ServeLock::acquire(&settings)?;
    let (store, pool) = open_store_with_pool(&settings, migrate).await?;
    // Claims the node; locks held by its crashed predecessor are freed before the first login.
    store
        .recover(serve_lock.claimant())
        .await
        .context("claiming the node and recovering after its previous run")?;
    let beating = CancellationToken::new();
    // Dropped on every way out, an early error's too: the renewals end with this server.
    let stop_beating = beating.clone().drop_guard();
    let heartbeat = tokio::spawn(heartbeat(
        store.clone(),
        settings.lock.ttl / 3,
        beating,
        shutdown.clone(),
    ));
    let auth = tokio::task::spawn_blocking({
        let store = store.clone();
        let n = settings.max_concurrent_hashes;
        let defaults = settings.default_domains.clone();
        let policy = settings.auth_policy.clone();
        let old_servers = first_login::OldPop3 {
            policies: store.clone(),
            maildrops: store.clone(),
            ca_file: settings.migration.ca_file.clone(),
        };
        let migration = Migration::new(
            Arc::new(old_servers),
            settings.migration.login_wait,
            settings.migration.max_connections,
        );
        // Bearer tokens of the identity providers the domains name (`tenancy::oauth`).
        let oauth = tenancy::oauth::OAuth::new(store.clone()).context("OAuth client setup")?;
        move || {
            Authenticator::new(store.clone(), n, defaults, policy).map(|a| {
                a.with_migration(migration)
                    .with_app_passwords(store)
                    .with_oauth(oauth)
            })
        }
    })
    .await??;
    let certs = load_certificates(&settings.tls)?;
    let acceptor = certs.acceptor().context("TLS setup")?;
    let pop3s = TcpListener::bind(settings.pop3s_listen)
        .await
        .with_context(|| format!("pop3s.listen: cannot listen on {}", settings.pop3s_listen))?;
    tokio::spawn(reload_on_sighup(certs, shutdown.clone()));
    tokio::spawn(retention::run(
        store.clone(),
        settings.retention,
        shutdown.clone(),
    ));
    tokio::spawn(bulletins::run(
        store.clone(),
        settings.bulletin_interval,
        shutdown.clone(),
    ));
    tracing::info!(addr = %pop3.local_addr()?, "POP3 listening");
    tracing::info!(addr = %pop3s.local_addr()?, "POP3S listening");
    tracing::info!(addr = %lmtp.local_addr()?, "LMTP listening");
    sasl.log("SMTP AUTH service");
    socketmap.log("Postfix socketmap");
    policy.log("Postfix policy service");
    let admin_addr = admin.local_addr()?;
    let admin_state = admin_web::AppState::new(
        admin_web::Roles::of(store.clone()),
        settings.admin.clone(),
        admin_web::system_clock(),
    );
    // The Prometheus recorder: the crates' `metrics` calls record from here on.
    match telemetry::metrics() {
        Ok(handle) => admin_state.set_metrics(telemetry::metrics_render(handle, pool)),
        Err(e) => tracing::warn!(error = %e, "metrics unavailable"),
    }
    announce_bootstrap(&*store, &admin_state, admin_addr, settings.admin.tls).await?;
    let admin_tls = settings.admin.tls.then(|| acceptor.clone());
    tracing::info!(addr = %admin_addr, tls = settings.admin.tls, "admin UI listening");
    let auth = Arc::new(auth);
    let services = pop3_server::Services {
        maildrops: store.clone(),
        policies: store.clone(),
        auth: auth.clone(),
        tls: Some(acceptor.clone()),
        apop: apop_verifier(&settings, &auth)?,
        traces: Some(store.clone()),
    };
    tokio::join!(
        pop3_server::run_with_pop3s(
            pop3,
            Some(pop3s),
            services,
            settings.pop3.clone(),
            shutdown.clone()
        ),
        lmtp::run(lmtp, store.clone(), settings.lmtp.clone(), shutdown.clone()),
        serve_mta(
            sasl,
            "sasl",
            &settings.sasl,
            settings.lmtp.shutdown_grace,
            mta::auth::AuthService::new(
                auth.clone(),
                mta::auth::Config {
                    // One rule for passwords in the clear, POP3's: SMTP clients are checked
                    // against the same networks.
                    trusted_networks: settings.pop3.cleartext_networks.clone(),
                    idle_timeout: settings.sasl.idle_timeout,
                    ..mta::auth::Config::default()
                },
            ),
            shutdown.clone(),
        ),
        serve_mta(
            socketmap,
            "socketmap",
            &settings.socketmap,
            settings.lmtp.shutdown_grace,
            mta::socketmap::Socketmap::new(
                store.clone(),
                store.clone(),
                mta::socketmap::Config {
                    idle_timeout: settings.socketmap.idle_timeout,
                    ..mta::socketmap::Config::default()
                },
            ),
            shutdown.clone(),
        ),
        serve_mta(
            policy,
            "policy",
            &settings.policy,
            settings.lmtp.shutdown_grace,
            mta::policy::PolicyService::new(
                store.clone(),
                mta::policy::Config {
                    idle_timeout: settings.policy.idle_timeout,
                },
            ),
            shutdown.clone(),
        ),
        async {
            if let Err(e) = admin_web::serve(admin, admin_state, admin_tls, shutdown).await {
                tracing::error!(error = %e, "admin UI stopped");
            }
        },
    );
    // The claim is renewed until the sessions are drained, then given up for the next start.
    drop(stop_beating);
    let taken_over = heartbeat.await?;
    if let Err(e) = store.leave().await {
        tracing::warn!(error = %e, "giving up the node's claim failed; the next start may wait");
    }
    drop(serve_lock);
    tracing::info!("stopped");
    taken_over
}

/// Renews this server's claim on its node until `stop`. If another server took the node over
/// (this one went unheard for a lock TTL), two servers share a node_id: this one shuts down.
async fn heartbeat(
    store: Arc<dyn Store>,
    every: std::time::Duration,
    stop: CancellationToken,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match store.heartbeat().await {
            Ok(()) => {}
            Err(e @ mailstore::StoreError::Conflict(_)) => {
                tracing::error!(error = %e, "shutting down: this node_id is served elsewhere");
                shutdown.cancel();
                return Err(e.into());
            }
            Err(e) => tracing::warn!(error = %e, "renewing this node's claim failed"),
        }
    }
}

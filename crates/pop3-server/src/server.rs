//! Serving POP3 on a listener: `listener::serve` accepts connections (connection cap, PROXY
//! header, graceful shutdown that ends late sessions with `-ERR [SYS/TEMP]`); this adds the
//! per-session tracing span and the batch renewal of this process's maildrop leases. POP3S
//! (implicit TLS) is a second listener on the same session code, PROXY policy and limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use listener::{Conn, ProxyPolicy};
use mailstore::{Maildrops, Policies, Traces};
use tenancy::Authenticator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::lease::{Kicks, LeaseToken};
use crate::observe::PreLogin;
use crate::session::{Session, Tracer};

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
    /// PROXY protocol: off, or headers required from trusted proxies (see `listener`).
    pub proxy: ProxyPolicy,
    /// Clients allowed to send passwords without TLS, besides loopback.
    pub cleartext_networks: Vec<listener::Network>,
    /// Before login a session gets this long between commands (shorter than `idle_timeout`,
    /// which RFC 1939 fixes for logged-in sessions): unauthenticated connections are cheap to
    /// open and must not sit on a slot.
    pub login_timeout: Duration,
    /// The longest a TLS handshake (POP3S, or after STLS) may take.
    pub handshake_timeout: Duration,
    /// Connections from one client address that have not logged in yet, across POP3 and POP3S.
    pub max_connections_per_ip: usize,
    /// Bad commands (unknown, malformed, wrong state, too long) tolerated before login; one
    /// more closes the connection.
    pub bad_commands_before_login: u32,
    /// The same after login, where a confused client is more likely than a scanner.
    pub bad_commands_after_login: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 1000,
            lease_renewal: Duration::from_secs(10),
            proxy: ProxyPolicy::default(),
            cleartext_networks: Vec::new(),
            login_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(30),
            max_connections_per_ip: 20,
            bad_commands_before_login: 3,
            bad_commands_after_login: 20,
        }
    }
}

/// What sessions share: of the store, only the roles POP3 uses.
#[derive(Clone)]
pub struct Services {
    /// Locking, listing, reading and UPDATE.
    pub maildrops: Arc<dyn Maildrops>,
    /// What CAPA says about retention and LOGIN-DELAY.
    pub policies: Arc<dyn Policies>,
    pub auth: Arc<Authenticator>,
    /// TLS for STLS and POP3S; `None` offers neither.
    pub tls: Option<tls::TlsAcceptor>,
    /// APOP (RFC 1939 §7): `None` where it is off, and then no greeting carries a timestamp.
    pub apop: Option<Arc<tenancy::ApopVerifier>>,
    /// Protocol traces an admin started; `None` records none.
    pub traces: Option<Arc<dyn Traces>>,
}

/// Serves POP3 on `listener` until `shutdown` is cancelled, then drains sessions and returns.
pub async fn run(
    listener: TcpListener,
    services: Services,
    config: Config,
    shutdown: CancellationToken,
) {
    run_with_pop3s(listener, None, services, config, shutdown).await;
}

/// As `run`, plus POP3S (TLS from the first byte) on `pop3s` when given; it needs
/// `services.tls`.
pub async fn run_with_pop3s(
    listener: TcpListener,
    pop3s: Option<TcpListener>,
    services: Services,
    config: Config,
    shutdown: CancellationToken,
) {
    let stop_renewal = CancellationToken::new();
    let kicks = Kicks::default();
    // Shown from the start, so a scrape before the first login reads 0 rather than nothing.
    metrics::gauge!(crate::observe::names::MAILDROPS_HELD).set(0.0);
    let renewer = tokio::spawn(renew_leases(
        services.maildrops.clone(),
        config.lease_renewal,
        kicks.clone(),
        stop_renewal.clone(),
    ));
    let options = listener::Options {
        name: "pop3",
        max_connections: config.max_connections,
        grace: config.shutdown_grace,
        busy_reply: b"-ERR [SYS/TEMP] too many connections, try again later\r\n",
        proxy: config.proxy.clone(),
    };
    let next_id = Arc::new(AtomicU64::new(1));
    let pre_login = PreLogin::default();
    let stop_tracing = CancellationToken::new();
    let (tracer, tracing_task) = match services.traces.clone() {
        Some(store) => {
            let (tracer, task) = Tracer::start(store, stop_tracing.clone());
            (Some(tracer), Some(task))
        }
        None => (None, None),
    };
    let plain = listener::serve(
        listener,
        options.clone(),
        shutdown.clone(),
        handler(
            services.clone(),
            config.clone(),
            next_id.clone(),
            (kicks.clone(), pre_login.clone(), tracer.clone()),
            false,
        ),
    );
    let implicit = async {
        let Some(pop3s) = pop3s else {
            return;
        };
        if services.tls.is_none() {
            tracing::warn!("POP3S not served: no TLS configured");
            return;
        }
        let options = listener::Options {
            name: "pop3s",
            // A plain-text busy line would only confuse a TLS client: it is just closed.
            busy_reply: b"",
            ..options
        };
        listener::serve(
            pop3s,
            options,
            shutdown.clone(),
            handler(
                services.clone(),
                config.clone(),
                next_id.clone(),
                (kicks.clone(), pre_login.clone(), tracer.clone()),
                true,
            ),
        )
        .await;
    };
    tokio::join!(plain, implicit);
    // Sessions are over: their leases are released or left to expire.
    stop_renewal.cancel();
    let _ = renewer.await;
    // What the sessions' traces still queued is written before the server returns.
    stop_tracing.cancel();
    if let Some(task) = tracing_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}

type SessionFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The per-connection handler: a session in its own span; `implicit_tls` for POP3S.
fn handler(
    services: Services,
    config: Config,
    next_id: Arc<AtomicU64>,
    (kicks, pre_login, tracer): (Kicks, PreLogin, Option<Arc<Tracer>>),
    implicit_tls: bool,
) -> impl Fn(Conn, CancellationToken) -> SessionFuture + Send + Sync + 'static {
    move |conn: Conn, abort| {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!(
            "pop3",
            session = id,
            pop3s = implicit_tls,
            peer = %conn.peer,
            proxy = tracing::field::Empty,
            tenant = tracing::field::Empty,
            user = tracing::field::Empty,
        );
        if let Some(proxy) = conn.proxy {
            span.record("proxy", tracing::field::display(proxy));
        }
        Box::pin(
            Session::new(services.clone(), config.clone(), abort)
                .local(conn.local)
                .peer(conn.peer)
                .kicks(kicks.clone())
                .pre_login(pre_login.clone())
                .traced(tracer.clone(), id)
                .run(conn.stream, implicit_tls)
                .instrument(span),
        ) as SessionFuture
    }
}

async fn renew_leases(
    store: Arc<dyn Maildrops>,
    every: Duration,
    kicks: Kicks,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match crate::observe::timed("renew_leases", store.renew_leases()).await {
            Ok(lost) if !lost.is_empty() => {
                tracing::info!(
                    sessions = lost.len(),
                    "maildrop leases lost; ending their sessions"
                );
                kicks.kick(lost.into_iter().map(LeaseToken));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "renewing maildrop leases failed"),
        }
    }
}

//! What every handler shares: the store, the web settings and the clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailstore::Store;

/// Unix milliseconds now. A function so tests can move time (session expiry) without sleeping.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Renders the process's metrics in the Prometheus text format (installed by the binary).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    })
}

/// The admin UI's settings (`[admin]` in the config file).
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub session_absolute: Duration,
    /// Whether the UI is served over TLS: cookies are then `Secure` and the expected `Origin`
    /// is `https://…`.
    pub tls: bool,
    /// Rows per page of a listing.
    pub page_size: u64,
    /// Failed sign-ins (per account, and per client address) in 15 minutes before sign-in is
    /// refused for a while.
    pub signin_failures: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(30 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            tls: false,
            page_size: 25,
            signin_failures: 5,
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub config: WebConfig,
    pub clock: Clock,
    /// The one-time bootstrap token while no admin exists (see `pophost serve`).
    pub bootstrap: Mutex<Option<String>>,
    /// `/metrics`: unset (404) unless the binary installed a recorder.
    pub metrics: std::sync::OnceLock<MetricsRender>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: WebConfig, clock: Clock) -> Self {
        Self(Arc::new(Inner {
            store,
            config,
            clock,
            bootstrap: Mutex::new(None),
            metrics: std::sync::OnceLock::new(),
        }))
    }

    /// Serves `render`'s output at `/metrics` (once; later calls are ignored).
    pub fn set_metrics(&self, render: MetricsRender) {
        let _ = self.0.metrics.set(render);
    }

    /// Arms the one-time bootstrap link; returns its token.
    pub fn arm_bootstrap(&self) -> String {
        let token = crate::auth::random_token();
        *self.0.bootstrap.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        token
    }

    pub fn now(&self) -> i64 {
        (self.0.clock)()
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

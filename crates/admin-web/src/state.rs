//! What every handler shares: the store's roles it uses, the web settings and the clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::provision::Roles;

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
    /// Failed sign-ins for one account from one client address in 15 minutes before that address
    /// may not try that account for a while; an address may fail `SIGNIN_FAILURES_PER_ADDRESS`
    /// times as many over all accounts.
    pub signin_failures: u64,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` name the client (`admin.trusted_proxies`).
    pub trusted_proxies: Vec<listener::Network>,
    /// The origin browsers see when the UI is reached through a proxy (`admin.public_url`):
    /// state-changing requests from it are accepted besides this listener's own origin.
    pub public_origin: Option<PublicOrigin>,
}

/// An address may fail this many times `signin_failures` over all accounts: a few admins behind
/// one NAT each mistyping a password, but not a password spray.
pub const SIGNIN_FAILURES_PER_ADDRESS: u64 = 4;

/// The origin (`scheme://host[:port]`, as a browser's `Origin` header spells it) of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOrigin(String);

impl PublicOrigin {
    /// The origin of `url` (`https://admin.isp.example`, `https://[2001:db8::1]:8443/`). A path
    /// other than `/`, a query or user info is refused: the UI lives at a host's root.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{url:?} {why} (expected e.g. https://admin.example.net)");
        let uri: axum::http::Uri = url.parse().map_err(|_| bad("is not a URL"))?;
        let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
        let default_port = match scheme.as_deref() {
            Some("https") => 443,
            Some("http") => 80,
            _ => return Err(bad("is not an http:// or https:// URL")),
        };
        let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return Err(bad("has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(bad("has user info"));
        }
        if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
            return Err(bad("has a path or query"));
        }
        let host = authority.host().to_ascii_lowercase();
        let scheme = scheme.unwrap_or_default();
        Ok(PublicOrigin(match authority.port_u16() {
            Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
            _ => format!("{scheme}://{host}"),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(30 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            tls: false,
            page_size: 25,
            signin_failures: 5,
            trusted_proxies: Vec::new(),
            public_origin: None,
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    /// The store as the directory, admin and policy roles: the admin UI neither opens maildrops
    /// nor delivers.
    pub roles: Roles,
    pub config: WebConfig,
    pub clock: Clock,
    /// The one-time bootstrap token while no admin exists (see `pophost serve`).
    pub bootstrap: Mutex<Option<String>>,
    /// `/metrics`: unset (404) unless the binary installed a recorder.
    pub metrics: std::sync::OnceLock<MetricsRender>,
    /// How many failed sign-ins the audit log still takes this minute.
    pub signin_audit: crate::pages::signin::AuditBudget,
}

impl AppState {
    pub fn new(roles: Roles, config: WebConfig, clock: Clock) -> Self {
        Self(Arc::new(Inner {
            roles,
            config,
            clock,
            bootstrap: Mutex::new(None),
            metrics: std::sync::OnceLock::new(),
            signin_audit: Default::default(),
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

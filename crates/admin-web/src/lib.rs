//! The admin UI and the JSON provisioning API.
//!
//! Layout: `provision` (the one provisioning service, also used by the `pophost` CLI: every
//! audited change, the JSON shapes, the limit parser, password hashing), `state` (what handlers
//! share: the store's roles, settings, clock), `error` (the one error type, safe pages), `auth`
//! (the `Actor` extractor, sessions, CSRF, API tokens), `client` (the client's address, behind a
//! proxy too), `password` (the one policy for new passwords), `pages` (one module per resource,
//! each with its routes and templates), `api` (`/api/v1` and its generated OpenAPI document),
//! `headers` (security headers on every response), `security` (refused requests logged,
//! rate-limited, and counted). Pages and API are adapters over `provision`
//! and do not call each other. `app` assembles the router; `serve` runs it.

pub mod api;
pub mod auth;
mod client;
pub mod error;
pub mod flash;
mod headers;
mod metrics;
pub mod pages;
pub mod password;
pub mod provision;
mod security;
pub mod state;

use std::net::SocketAddr;

use axum::Router;
use axum::middleware::from_fn_with_state;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{Chrome, FieldErrors};
pub use error::{ApiError, AppError};
pub use password::{PasswordFor, PasswordProblem, password_problem};
pub use provision::{Actor, Audit, Roles};
pub use state::{AppState, Clock, MetricsRender, PublicOrigin, WebConfig, system_clock};

/// The whole admin application: browser pages, the API, health and static files.
pub fn app(state: AppState) -> Router {
    let browser = Router::new()
        .merge(pages::signin::routes())
        .merge(pages::dashboard::routes())
        .merge(pages::domains::routes())
        .merge(pages::policies::routes())
        .merge(pages::oauth::routes())
        .merge(pages::users::routes())
        .merge(pages::bin::routes())
        .merge(pages::app_passwords::routes())
        .merge(pages::traces::routes())
        .merge(pages::import::routes())
        .merge(pages::export::routes())
        .merge(pages::sessions::routes())
        .merge(pages::bulletins::routes())
        .merge(pages::audit::routes())
        .merge(pages::tokens::routes())
        .merge(pages::admins::routes())
        .merge(pages::search::routes())
        .layer(from_fn_with_state(state.clone(), auth::browser));
    let (api, openapi) = api::routes();
    let api = api.layer(from_fn_with_state(state.clone(), auth::api));
    Router::new()
        .merge(browser)
        // Users' own pages, behind their own session middleware (not `auth::browser`).
        .merge(pages::me::routes(&state))
        .nest("/api/v1", api)
        .merge(api::public_routes(openapi))
        .merge(pages::health::routes())
        .merge(metrics::routes())
        .merge(pages::assets::routes())
        .fallback(|| async { AppError::NotFound })
        .layer(from_fn_with_state(state.clone(), security::watch))
        .layer(axum::middleware::from_fn(headers::security))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown`: over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<tls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app(state).into_make_service_with_connect_info::<ClientAddr>();
    let stop = shutdown.clone();
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
        Some(acceptor) => {
            let listener = TlsListener::start(listener, acceptor, shutdown)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    }
}

/// The client's address as handlers see it (`ConnectInfo<ClientAddr>`), over HTTP or HTTPS.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// HTTPS: TLS handshakes run in their own tasks (a slow client holds up no one else) and
/// finished connections are handed to axum.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(tls::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// A client has this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl TlsListener {
    fn start(
        listener: TcpListener,
        acceptor: tls::TlsAcceptor,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "admin accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "admin TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tls::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (shutdown): graceful shutdown ends `serve` from its side.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

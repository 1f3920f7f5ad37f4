//! The admin UI and the JSON provisioning API.
//!
//! Layout: `state` (what handlers share), `error` (the one error type, safe pages), `auth` (the
//! `Actor` extractor, sessions, CSRF, API tokens), `pages` (one module per resource, each with
//! its routes and templates), `api` (`/api/v1`, the same authorization as the pages),
//! `headers` (security headers on every response). `app` assembles the router; `serve` runs it.

pub mod api;
pub mod auth;
pub mod error;
mod headers;
pub mod pages;
pub mod state;

use std::net::SocketAddr;

use axum::Router;
use axum::middleware::from_fn_with_state;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{Actor, Audit, Chrome, FieldErrors};
pub use error::{ApiError, AppError};
pub use state::{AppState, Clock, WebConfig, system_clock};

/// The whole admin application: browser pages, the API, health and static files.
pub fn app(state: AppState) -> Router {
    let browser = Router::new()
        .merge(pages::signin::routes())
        .merge(pages::dashboard::routes())
        .merge(pages::domains::routes())
        .merge(pages::users::routes())
        .merge(pages::sessions::routes())
        .merge(pages::audit::routes())
        .merge(pages::tokens::routes())
        .layer(from_fn_with_state(state.clone(), auth::browser));
    let api = api::routes().layer(from_fn_with_state(state.clone(), auth::api));
    Router::new()
        .merge(browser)
        .nest("/api/v1", api)
        .merge(api::public_routes())
        .merge(pages::health::routes())
        .merge(pages::assets::routes())
        .fallback(|| async { AppError::NotFound })
        .layer(axum::middleware::from_fn(headers::security))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

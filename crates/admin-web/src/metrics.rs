//! `GET /metrics`: the Prometheus text exposition of the process's counters, gauges and
//! histograms. Like `/health`, it needs no sign-in: Prometheus scrapes without cookies, and the
//! admin listener belongs on a private network (see deploy/README.md). Nothing in it names a
//! user or a client: labels are listeners, commands, mechanisms and results.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let Some(render) = state.metrics.get().cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Rendering walks every series and may run histogram upkeep: off the async workers.
    match tokio::task::spawn_blocking(move || render()).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

//! `GET /metrics`: the Prometheus text exposition of the process's counters, gauges and
//! histograms. Like `/health`, it needs no sign-in: Prometheus scrapes without cookies, and the
//! admin listener belongs on a private network (see deploy/README.md). Nothing in it names a
//! user or a client: labels are listeners, commands, mechanisms and results.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use mailstore::Scope;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let Some(render) = state.metrics.get().cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    legacy_gauges(&state).await;
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

/// `pophost_accounts_legacy_password{scheme}`: accounts still holding a password hash imported
/// from another server, from the store at each scrape (a partial index makes that cheap). A
/// scheme seen before and gone now reads 0 rather than keeping its last value.
async fn legacy_gauges(state: &AppState) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let counts = match state.roles.admin.legacy_schemes(&Scope::All).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "counting legacy password schemes failed");
            return;
        }
    };
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    for scheme in seen.iter() {
        if !counts.iter().any(|(s, _)| s == scheme) {
            metrics::gauge!(LEGACY_GAUGE, "scheme" => scheme.clone()).set(0.0);
        }
    }
    for (scheme, n) in counts {
        metrics::gauge!(LEGACY_GAUGE, "scheme" => scheme.clone()).set(n as f64);
        if !seen.contains(&scheme) {
            seen.push(scheme);
        }
    }
}

const LEGACY_GAUGE: &str = "pophost_accounts_legacy_password";

//! `/healthz`: the process answers. `/readyz`: and the store answers too (for load balancers).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use mailstore::Scope;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.roles.admin.totals(&Scope::Domains(Vec::new())).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "readyz: store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}

use axum::Router;

use crate::state::AppState;

/// Routes under `/api/v1` that need a bearer token.
pub fn routes() -> Router<AppState> {
    Router::new()
}

/// Routes that need none: the OpenAPI document.
pub fn public_routes() -> Router<AppState> {
    Router::new()
}

//! CSV exports for the browser: a domain's users (`/domains/{domain}/users.csv`, in the columns
//! the account import reads) and the domains the admin may see (`/domains.csv`). No password
//! material is ever exported.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::AppError;
use crate::provision::{Actor, accounts};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains.csv", get(domains))
        .route("/domains/{domain}/users.csv", get(users))
}

async fn users(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let domain = actor.domain(&raw)?;
    let text = accounts::export_users(&state.roles, &actor, &domain).await?;
    Ok(csv(&format!("{domain}-users.csv"), text))
}

async fn domains(State(state): State<AppState>, actor: Actor) -> Result<Response, AppError> {
    let text = accounts::export_domains(&state.roles, &actor).await?;
    Ok(csv("domains.csv", text))
}

/// A CSV download; not cached, since it lists accounts.
fn csv(filename: &str, text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        text,
    )
        .into_response()
}

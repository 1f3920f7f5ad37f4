//! Live POP3 sessions (maildrops locked right now) and "end session": breaking the lock makes the
//! frontend holding it end that session at its next lease renewal, without UPDATE.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Redirect;
use axum::routing::{get, post};
use mailstore::Address;

use crate::auth::Chrome;
use crate::error::AppError;
use crate::pages::human_time;
use crate::provision::{self, Actor, Audit};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(list))
        .route("/sessions/{address}/end", post(end))
}

struct Row {
    address: String,
    node: String,
    since: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "sessions.html")]
struct SessionsPage {
    chrome: Chrome,
    rows: Vec<Row>,
}

async fn list(State(state): State<AppState>, actor: Actor) -> Result<SessionsPage, AppError> {
    let rows = provision::live_sessions(&state.roles, &actor)
        .await?
        .into_iter()
        .map(|s| Row {
            address: s.address.to_string(),
            node: s.node,
            since: human_time(s.since),
        })
        .collect();
    Ok(SessionsPage {
        chrome: Chrome::from(&actor),
        rows,
    })
}

/// Parses `user@domain` from a URL and checks the domain against the admin's scope.
pub fn scoped_address(actor: &Actor, raw: &str) -> Result<Address, AppError> {
    let address = Address::parse(raw).map_err(|_| AppError::NotFound)?;
    actor.domain(address.domain.as_str())?;
    Ok(address)
}

async fn end(
    State(state): State<AppState>,
    actor: Actor,
    Path(address): Path<String>,
) -> Result<Redirect, AppError> {
    let address = scoped_address(&actor, &address)?;
    let was_locked = state.roles.admin.break_lock(&address).await?;
    let object = address.to_string();
    actor
        .audit(
            &state.roles,
            Audit {
                success: was_locked,
                ..Audit::new("session.end", &object, Some(&address.domain))
            },
        )
        .await;
    Ok(Redirect::to("/sessions"))
}

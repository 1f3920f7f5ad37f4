//! Live POP3 sessions (maildrops locked right now), filtered by address and domain, with the
//! client's address and TLS, and "end session": breaking the lock makes the frontend holding it
//! end that session at its next lease renewal, without UPDATE.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use mailstore::Address;

use crate::auth::Chrome;
use crate::error::AppError;
use crate::flash;
use crate::pages::{Pager, human_time};
use crate::provision::{self, Actor, Audit, SessionQuery};
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
    client: String,
    tls: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "sessions.html")]
struct SessionsPage {
    chrome: Chrome,
    rows: Vec<Row>,
    filter: SessionQuery,
    pager: Pager,
}

async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(filter): Query<SessionQuery>,
) -> Result<SessionsPage, AppError> {
    let sessions: Vec<_> = provision::live_sessions(&state.roles, &actor)
        .await?
        .into_iter()
        .filter(|s| filter.matches(s))
        .collect();
    let list = filter.list();
    let size = list.page_size(state.config.page_size);
    let total = sessions.len() as u64;
    let page = list.page_within(total, size);
    let skip = usize::try_from((page - 1) * size).unwrap_or(usize::MAX);
    let rows = sessions
        .into_iter()
        .skip(skip)
        .take(usize::try_from(size).unwrap_or(usize::MAX))
        .map(|s| Row {
            address: s.address.to_string(),
            node: s.node,
            since: human_time(s.since),
            client: s.client.unwrap_or_else(|| "-".into()),
            tls: match s.tls {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            },
        })
        .collect();
    let pager = Pager::new(&list, total, size).with_params(vec![
        ("address".into(), filter.address.clone()),
        ("domain".into(), filter.domain.clone()),
    ]);
    Ok(SessionsPage {
        chrome: Chrome::from(&actor),
        rows,
        filter,
        pager,
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
) -> Result<Response, AppError> {
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
    Ok(if was_locked {
        flash::done("/sessions", format!("Session of {address} ended"))
    } else {
        flash::failed("/sessions", format!("No session to end for {address}"))
    })
}

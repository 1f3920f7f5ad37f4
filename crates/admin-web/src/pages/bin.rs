//! A user's recycle bin page (`/domains/{d}/users/{l}/bin`): what was deleted, when and by whom,
//! with restoring a selection, everything deleted between two times, or all, each "as new" or
//! not, and purging with a confirmation; over `provision::bin` like the API and the CLI.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_extra::extract::Form;
use mailstore::{Address, BinSelection, LocalPart};
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors};
use crate::error::AppError;
use crate::flash;
use crate::pages::domains::ConfirmPage;
use crate::pages::users::user_href;
use crate::pages::{ListQuery, Pager, human_bytes, human_time};
use crate::provision::bin::{self as ops, deleted_by};
use crate::provision::when::parse_time;
use crate::provision::{self, Actor};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains/{domain}/users/{local}/bin", get(show))
        .route(
            "/domains/{domain}/users/{local}/bin/restore",
            axum::routing::post(restore),
        )
        .route(
            "/domains/{domain}/users/{local}/bin/purge",
            get(confirm_purge).post(purge),
        )
}

/// How many messages a user's bin holds, for the user page.
pub async fn count(state: &AppState, actor: &Actor, address: &Address) -> Result<u64, AppError> {
    Ok(ops::bin_page(&state.roles, actor, address, 0, 0)
        .await?
        .total)
}

/// One row of the table.
struct Row {
    id: i64,
    uidl: String,
    size: String,
    delivered: String,
    deleted: String,
    by: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "user_bin.html")]
struct BinPage {
    chrome: Chrome,
    address: String,
    href: String,
    user_href: String,
    rows: Vec<Row>,
    pager: Pager,
}

/// The user a URL names, checked against the actor's scope (and existing).
async fn target(state: &AppState, actor: &Actor, d: &str, l: &str) -> Result<Address, AppError> {
    let domain = actor.domain(d)?;
    let local = LocalPart::parse(l).map_err(|_| AppError::NotFound)?;
    let address = Address { local, domain };
    provision::user(&state.roles, actor, &address).await?;
    Ok(address)
}

fn bin_href(address: &Address) -> String {
    format!("{}/bin", user_href(address))
}

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Response, AppError> {
    let address = target(&state, &actor, &d, &l).await?;
    let size = query.page_size(state.config.page_size);
    let mut page = ops::bin_page(&state.roles, &actor, &address, query.offset(size), size).await?;
    let within = query.page_within(page.total, size);
    if page.items.is_empty() && within < query.page() {
        page = ops::bin_page(&state.roles, &actor, &address, (within - 1) * size, size).await?;
    }
    let rows = page
        .items
        .iter()
        .map(|m| Row {
            id: m.id,
            uidl: m.uid.clone(),
            size: human_bytes(m.size),
            delivered: human_time(m.delivered_at),
            deleted: human_time(m.deleted_at),
            by: deleted_by(m),
        })
        .collect();
    Ok(BinPage {
        chrome: Chrome::from(&actor),
        address: address.to_string(),
        href: bin_href(&address),
        user_href: user_href(&address),
        rows,
        pager: Pager::new(&query, page.total, size).with_params(Vec::new()),
    }
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
struct RestoreForm {
    /// `selected`, `range` or `all`.
    #[serde(default)]
    mode: String,
    #[serde(default)]
    selected: Vec<String>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    as_new: Option<String>,
}

impl RestoreForm {
    fn selection(&self) -> Result<BinSelection, String> {
        match self.mode.as_str() {
            "all" => Ok(BinSelection::All),
            "selected" => {
                let ids: Vec<i64> = self
                    .selected
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect();
                if ids.is_empty() {
                    Err("No messages selected".into())
                } else {
                    Ok(BinSelection::Ids(ids))
                }
            }
            "range" => {
                let from_ms = parse_time(&self.from).map_err(|e| e.to_string())?;
                let to_ms = parse_time(&self.to).map_err(|e| e.to_string())?;
                // A time typed to the minute takes in that whole minute.
                let to_ms = if self.to.trim().len() <= 16 && !self.to.trim().ends_with('Z') {
                    to_ms + 59_999
                } else {
                    to_ms
                };
                if from_ms > to_ms {
                    return Err("The start of the range is after its end".into());
                }
                Ok(BinSelection::DeletedBetween { from_ms, to_ms })
            }
            _ => Err("Choose what to restore".into()),
        }
    }
}

async fn restore(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Form(form): Form<RestoreForm>,
) -> Result<Response, AppError> {
    let address = target(&state, &actor, &d, &l).await?;
    let href = bin_href(&address);
    let which = match form.selection() {
        Ok(which) => which,
        Err(message) => return Ok(flash::failed(&href, message)),
    };
    let as_new = form.as_new.as_deref() == Some("on");
    let r = ops::restore(&state.roles, &actor, &address, &which, as_new).await?;
    let message = match (r.restored, r.renumbered) {
        (0, _) => "Nothing to restore".to_string(),
        (n, 0) => format!("{n} message(s) restored with their UIDL"),
        (n, k) => format!("{n} message(s) restored, {k} with a new UIDL"),
    };
    Ok(flash::done(&href, message))
}

fn confirm_page(actor: &Actor, address: &Address, total: u64) -> ConfirmPage {
    let href = bin_href(address);
    ConfirmPage {
        chrome: Chrome::from(actor),
        title: format!("Empty the recycle bin of {address}"),
        message: format!("Delete the {total} message(s) in the recycle bin of {address} for good?"),
        action: format!("{href}/purge"),
        cancel: href,
        offer_force: false,
        errors: FieldErrors::default(),
    }
}

async fn confirm_purge(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let address = target(&state, &actor, &d, &l).await?;
    let total = count(&state, &actor, &address).await?;
    Ok(confirm_page(&actor, &address, total).into_response())
}

async fn purge(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let address = target(&state, &actor, &d, &l).await?;
    let purged = ops::purge(&state.roles, &actor, &address, &BinSelection::All).await?;
    Ok(flash::done(
        &bin_href(&address),
        format!("{purged} message(s) purged from the recycle bin"),
    ))
}

//! The audit log, read-only: filterable by who, what and which object; a domain admin sees the
//! entries of their own domains only (the store applies the scope).

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use mailstore::AuditFilter;
use serde::Deserialize;

use crate::auth::Chrome;
use crate::error::AppError;
use crate::pages::{ListQuery, Pager, human_time};
use crate::provision::Actor;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/audit", get(list))
}

#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    object: String,
    #[serde(default)]
    page: Option<u64>,
}

struct Row {
    at: String,
    actor: String,
    action: String,
    object: String,
    before: String,
    after: String,
    ip: String,
    success: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    filter: AuditFilter,
    rows: Vec<Row>,
    pager: Pager,
    /// The filter as a query string for the pager links.
    filter_query: String,
}

async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(query): Query<AuditQuery>,
) -> Result<AuditPage, AppError> {
    let filter = AuditFilter {
        actor: query.actor.trim().into(),
        action: query.action.trim().into(),
        object: query.object.trim().into(),
    };
    let list = ListQuery {
        q: String::new(),
        page: query.page,
    };
    let size = state.config.page_size;
    let page = state
        .roles
        .admin
        .audit_page(&actor.scope, &filter, list.offset(size), size)
        .await?;
    let rows = page
        .items
        .into_iter()
        .map(|e| Row {
            at: human_time(e.at),
            actor: e.actor,
            action: e.action,
            object: e.object,
            before: e.before.unwrap_or_default(),
            after: e.after.unwrap_or_default(),
            ip: e.ip.unwrap_or_default(),
            success: e.success,
        })
        .collect();
    let filter_query = form_urlencoded::Serializer::new(String::new())
        .append_pair("actor", &filter.actor)
        .append_pair("action", &filter.action)
        .append_pair("object", &filter.object)
        .finish();
    Ok(AuditPage {
        chrome: Chrome::from(&actor),
        pager: Pager::new(&list, page.total, size),
        filter,
        rows,
        filter_query,
    })
}

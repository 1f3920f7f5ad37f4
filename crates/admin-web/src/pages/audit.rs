//! The audit log, read-only: filterable by who, what and which object; a domain admin sees the
//! entries of their own domains only (the store applies the scope), and the client address of
//! their own entries only: where the ISP's staff work from is not the tenant's business.

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
    #[serde(default)]
    per_page: Option<u64>,
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
        per_page: query.per_page,
    };
    let size = list.page_size(state.config.page_size);
    let fetch = |offset| {
        state
            .roles
            .admin
            .audit_page(&actor.scope, &filter, offset, size)
    };
    let mut page = fetch(list.offset(size)).await?;
    let shown = list.page_within(page.total, size);
    if page.items.is_empty() && shown < list.page() {
        page = fetch((shown - 1) * size).await?;
    }
    let rows = page
        .items
        .into_iter()
        .map(|e| {
            // Another admin's address (the ISP's staff) is not shown to a domain admin.
            let ip_shown = if actor.is_super() || e.actor == actor.name {
                e.ip.clone().unwrap_or_default()
            } else {
                String::new()
            };
            Row {
                at: human_time(e.at),
                actor: e.actor,
                action: e.action,
                object: e.object,
                before: e.before.unwrap_or_default(),
                after: e.after.unwrap_or_default(),
                ip: ip_shown,
                success: e.success,
            }
        })
        .collect();
    let pager = Pager::new(&list, page.total, size).with_params(vec![
        ("actor".into(), filter.actor.clone()),
        ("action".into(), filter.action.clone()),
        ("object".into(), filter.object.clone()),
    ]);
    Ok(AuditPage {
        chrome: Chrome::from(&actor),
        pager,
        filter,
        rows,
    })
}

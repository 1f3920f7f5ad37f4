//! The search box in every page's header (`GET /search?q=`): a help-desk call starts with an
//! address, or part of one. It looks in every domain the admin may see (the store applies the
//! scope): users by the start of their local part (`john`, `john@`, `john@exam`), domains by
//! their name or an alias (`example`, `@exam`). A term naming one user (`john@example.com`,
//! or through an alias of its domain) goes straight to that user's page, as does a single match;
//! a single domain and no user goes to the domain's users.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use mailstore::SearchTerm;
use serde::Deserialize;

use crate::auth::Chrome;
use crate::error::AppError;
use crate::pages::domains::segment;
use crate::pages::human_bytes;
use crate::pages::users::user_href;
use crate::provision::Actor;
use crate::state::AppState;

/// The most users and the most domains a search shows.
const LIMIT: u64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new().route("/search", get(search))
}

#[derive(Debug, Default, Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

struct UserHit {
    address: String,
    href: String,
    usage: String,
    enabled: bool,
}

struct DomainHit {
    name: String,
    href: String,
    users: u64,
    aliases: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "search.html")]
struct SearchPage {
    chrome: Chrome,
    q: String,
    users: Vec<UserHit>,
    domains: Vec<DomainHit>,
    /// Whether a list was cut at `LIMIT`.
    more: bool,
    limit: u64,
}

async fn search(
    State(state): State<AppState>,
    actor: Actor,
    Query(query): Query<SearchQuery>,
) -> Result<Response, AppError> {
    let Some(term) = SearchTerm::parse(&query.q) else {
        return Ok(page(&actor, query.q, Default::default()).into_response());
    };
    // One more than shown, to know whether there are more.
    let hits = state
        .roles
        .admin
        .search(&actor.scope, &term, LIMIT + 1)
        .await?;
    if let Some(address) = &hits.exact {
        return Ok(Redirect::to(&user_href(address)).into_response());
    }
    match (hits.users.as_slice(), hits.domains.as_slice()) {
        ([user], []) => Ok(Redirect::to(&user_href(&user.address)).into_response()),
        ([], [domain]) => Ok(Redirect::to(&format!(
            "/domains/{}/users",
            segment(domain.name.as_str())
        ))
        .into_response()),
        _ => Ok(page(&actor, query.q, hits).into_response()),
    }
}

fn page(actor: &Actor, q: String, hits: mailstore::SearchHits) -> SearchPage {
    let limit = usize::try_from(LIMIT).unwrap_or(usize::MAX);
    let more = hits.users.len() > limit || hits.domains.len() > limit;
    SearchPage {
        chrome: Chrome::from(actor),
        q,
        users: hits
            .users
            .iter()
            .take(limit)
            .map(|u| UserHit {
                address: u.address.to_string(),
                href: user_href(&u.address),
                usage: format!(
                    "{} / {}",
                    human_bytes(u.usage.bytes),
                    u.quota
                        .bytes
                        .map_or_else(|| "unlimited".into(), human_bytes)
                ),
                enabled: u.enabled,
            })
            .collect(),
        domains: hits
            .domains
            .iter()
            .take(limit)
            .map(|d| DomainHit {
                name: d.name.to_string(),
                href: format!("/domains/{}/users", segment(d.name.as_str())),
                users: d.users,
                aliases: d
                    .aliases
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect(),
        more,
        limit: LIMIT,
    }
}

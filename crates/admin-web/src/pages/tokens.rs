//! API tokens: an admin creates bearer tokens for the provisioning API, scoped exactly like
//! themselves, expiring after a chosen time and optionally read-only. The secret is shown once
//! and stored only as a hash. Revoking asks for confirmation.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors};
use crate::error::AppError;
use crate::flash;
use crate::pages::domains::ConfirmPage;
use crate::pages::human_time;
use crate::provision::admins as ops;
use crate::provision::{self, Actor};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}/revoke", get(confirm_revoke).post(revoke))
}

/// The lifetimes offered, in days; 0 is "never expires".
const EXPIRY_DAYS: [u32; 4] = [30, 90, 365, 0];
const DEFAULT_DAYS: u32 = 90;
const DAY_MS: i64 = 86_400_000;

struct Row {
    id: i64,
    name: String,
    created: String,
    last_used: String,
    expires: String,
    expired: bool,
    access: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    rows: Vec<Row>,
    /// A token just created: shown this once.
    created: Option<String>,
    name: String,
    days: u32,
    choices: [u32; 4],
    read_only: bool,
    errors: FieldErrors,
}

async fn page(
    state: &AppState,
    actor: &Actor,
    created: Option<String>,
    form: &NewToken,
    errors: FieldErrors,
) -> Result<TokensPage, AppError> {
    let now = state.now();
    let rows = ops::tokens(&state.roles, actor)
        .await?
        .into_iter()
        .map(|t| Row {
            id: t.id,
            name: t.name,
            created: human_time(t.created_at),
            last_used: t.last_used.map_or_else(|| "never".into(), human_time),
            expires: t.expires_at.map_or_else(|| "never".into(), human_time),
            expired: t.expires_at.is_some_and(|e| e <= now),
            access: if t.read_only {
                "read-only"
            } else {
                "read and write"
            },
        })
        .collect();
    Ok(TokensPage {
        chrome: Chrome::from(actor),
        rows,
        created,
        name: form.name.clone(),
        days: form.days.unwrap_or(DEFAULT_DAYS),
        choices: EXPIRY_DAYS,
        read_only: form.read_only.is_some(),
        errors,
    })
}

async fn list(State(state): State<AppState>, actor: Actor) -> Result<TokensPage, AppError> {
    let form = NewToken::default();
    page(&state, &actor, None, &form, FieldErrors::default()).await
}

#[derive(Debug, Default, Deserialize)]
struct NewToken {
    #[serde(default)]
    name: String,
    /// Days until it expires; 0 never. Absent: the default.
    #[serde(default)]
    days: Option<u32>,
    #[serde(default)]
    read_only: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    actor: Actor,
    Form(form): Form<NewToken>,
) -> Result<Response, AppError> {
    let days = form.days.unwrap_or(DEFAULT_DAYS);
    let mut errors = FieldErrors::default();
    if !EXPIRY_DAYS.contains(&days) {
        errors.add("days", "Choose one of the lifetimes offered.");
    }
    let now = state.now();
    let expires_at = (days > 0).then(|| now.saturating_add(i64::from(days) * DAY_MS));
    let read_only = form.read_only.is_some();
    if errors.is_empty() {
        match ops::create_token(&state.roles, &actor, &form.name, expires_at, read_only, now).await
        {
            Ok(token) => {
                // Shown in this response only (not after a redirect): the store keeps no copy.
                let blank = NewToken::default();
                let page = page(&state, &actor, Some(token.secret), &blank, errors).await?;
                return Ok(page.into_response());
            }
            Err(provision::Error::Invalid(m)) => errors.add("name", m),
            Err(e) => return Err(e.into()),
        }
    }
    let page = page(&state, &actor, None, &form, errors).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

async fn confirm_revoke(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    let token = ops::tokens(&state.roles, &actor)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or(AppError::NotFound)?;
    Ok(ConfirmPage {
        chrome: Chrome::from(&actor),
        title: format!("Revoke API token {}", token.name),
        message: format!(
            "Revoke the API token \"{}\"? Scripts using it get 401 from now on.",
            token.name
        ),
        action: format!("/tokens/{id}/revoke"),
        cancel: "/tokens".into(),
        offer_force: false,
        errors: FieldErrors::default(),
    }
    .into_response())
}

async fn revoke(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    let name = ops::revoke_token(&state.roles, &actor, id).await?;
    Ok(flash::done("/tokens", format!("API token {name} revoked")))
}

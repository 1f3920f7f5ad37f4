//! API tokens: an admin creates bearer tokens for the provisioning API, scoped exactly like
//! themselves. The secret is shown once and stored only as a hash.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors, hash_secret, random_token};
use crate::error::AppError;
use crate::pages::human_time;
use crate::provision::{Actor, Audit};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}/revoke", post(revoke))
}

struct Row {
    id: i64,
    name: String,
    created: String,
    last_used: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    rows: Vec<Row>,
    /// A token just created: shown this once.
    created: Option<String>,
    name: String,
    errors: FieldErrors,
}

async fn page(
    state: &AppState,
    actor: &Actor,
    created: Option<String>,
    name: String,
    errors: FieldErrors,
) -> Result<TokensPage, AppError> {
    let rows = state
        .roles
        .admin
        .list_api_tokens(actor.admin_id()?)
        .await?
        .into_iter()
        .map(|t| Row {
            id: t.id,
            name: t.name,
            created: human_time(t.created_at),
            last_used: t.last_used.map_or_else(|| "never".into(), human_time),
        })
        .collect();
    Ok(TokensPage {
        chrome: Chrome::from(actor),
        rows,
        created,
        name,
        errors,
    })
}

async fn list(State(state): State<AppState>, actor: Actor) -> Result<TokensPage, AppError> {
    page(&state, &actor, None, String::new(), FieldErrors::default()).await
}

#[derive(Deserialize)]
struct NewToken {
    #[serde(default)]
    name: String,
}

async fn create(
    State(state): State<AppState>,
    actor: Actor,
    Form(form): Form<NewToken>,
) -> Result<Response, AppError> {
    let name = form.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        let mut errors = FieldErrors::default();
        errors.add("name", "Give the token a name of 1 to 100 characters.");
        let page = page(&state, &actor, None, name, errors).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let secret = format!("ph_{}", random_token());
    let id = state
        .roles
        .admin
        .add_api_token(actor.admin_id()?, &name, &hash_secret(&secret), state.now())
        .await?;
    actor
        .audit(
            &state.roles,
            Audit::new("token.create", &format!("token {id}"), None)
                .after(serde_json::json!({ "id": id, "name": name })),
        )
        .await;
    // Shown in this response only (not after a redirect): the store keeps no copy.
    Ok(page(
        &state,
        &actor,
        Some(secret),
        String::new(),
        FieldErrors::default(),
    )
    .await?
    .into_response())
}

async fn revoke(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<i64>,
) -> Result<Redirect, AppError> {
    state
        .roles
        .admin
        .revoke_api_token(actor.admin_id()?, id)
        .await?;
    actor
        .audit(
            &state.roles,
            Audit::new("token.revoke", &format!("token {id}"), None),
        )
        .await;
    Ok(Redirect::to("/tokens"))
}

//! Bulletins: a form to post a notice into every mailbox of a domain (or, for a super admin, of
//! every domain), now or at a time, and the list of bulletins in scope with their state and how
//! many mailboxes got them; a scheduled one can be cancelled. Over `provision::bulletins`.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use mailstore::{BulletinId, BulletinState, Scope};
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors};
use crate::error::AppError;
use crate::flash;
use crate::pages::human_time;
use crate::provision::bulletins::{self as ops, BulletinRequest};
use crate::provision::{self, Actor};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/bulletins", get(list).post(create))
        .route("/bulletins/{id}/cancel", post(cancel))
}

struct Row {
    id: i64,
    scope: String,
    subject: String,
    author: String,
    due: String,
    state: &'static str,
    scheduled: bool,
    recipients: u64,
}

#[derive(Template, WebTemplate)]
#[template(path = "bulletins.html")]
struct BulletinsPage {
    chrome: Chrome,
    rows: Vec<Row>,
    /// A domain admin's domains to choose from; empty for a super admin, who types a name.
    domains: Vec<String>,
    form: NewBulletin,
    errors: FieldErrors,
}

#[derive(Debug, Default, Deserialize)]
struct NewBulletin {
    /// Empty: every domain.
    #[serde(default)]
    domain: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body: String,
    /// `datetime-local` (UTC) or RFC 3339; empty: now.
    #[serde(default)]
    at: String,
}

async fn page(
    state: &AppState,
    actor: &Actor,
    form: NewBulletin,
    errors: FieldErrors,
) -> Result<BulletinsPage, AppError> {
    let rows = ops::list(&state.roles, actor)
        .await?
        .into_iter()
        .map(|b| Row {
            id: b.id.0,
            scope: b.scope.to_string(),
            subject: b.subject,
            author: b.author,
            due: human_time(b.due_at),
            state: b.state.as_str(),
            scheduled: b.state == BulletinState::Scheduled,
            recipients: b.recipients,
        })
        .collect();
    let domains = match &actor.scope {
        Scope::All => Vec::new(),
        Scope::Domains(list) => list.iter().map(ToString::to_string).collect(),
    };
    Ok(BulletinsPage {
        chrome: Chrome::from(actor),
        rows,
        domains,
        form,
        errors,
    })
}

async fn list(State(state): State<AppState>, actor: Actor) -> Result<BulletinsPage, AppError> {
    page(
        &state,
        &actor,
        NewBulletin::default(),
        FieldErrors::default(),
    )
    .await
}

async fn create(
    State(state): State<AppState>,
    actor: Actor,
    Form(form): Form<NewBulletin>,
) -> Result<Response, AppError> {
    let request = BulletinRequest {
        domain: Some(form.domain.clone()),
        subject: form.subject.clone(),
        body: form.body.clone(),
        at: Some(form.at.clone()),
    };
    let mut errors = FieldErrors::default();
    match ops::post(&state.roles, &actor, &request, state.now()).await {
        Ok(b) if b.state == BulletinState::Delivered => {
            return Ok(flash::done(
                "/bulletins",
                format!("Bulletin {} delivered to {} mailboxes", b.id, b.recipients),
            ));
        }
        Ok(b) => {
            return Ok(flash::done(
                "/bulletins",
                format!("Bulletin {} scheduled for {}", b.id, human_time(b.due_at)),
            ));
        }
        Err(provision::Error::Invalid(m)) => errors.add("bulletin", m),
        Err(provision::Error::NotFound(_)) => errors.add("domain", "No such domain."),
        Err(provision::Error::Forbidden) => {
            errors.add("domain", "Only a super admin may post to all domains.")
        }
        Err(e) => return Err(e.into()),
    }
    let page = page(&state, &actor, form, errors).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

async fn cancel(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    match ops::cancel(&state.roles, &actor, BulletinId(id)).await {
        Ok(()) => Ok(flash::done(
            "/bulletins",
            format!("Bulletin {id} cancelled"),
        )),
        Err(provision::Error::Invalid(m)) => Ok(flash::failed("/bulletins", m)),
        Err(e) => Err(e.into()),
    }
}

//! `/api/v1/domains/{domain}/users/{local}/app-passwords`: a user's app passwords (one per
//! device), made and revoked over `provision::app_passwords` like the user page and
//! `pophost user app-password`. The new password is in the creation's response only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, Body, ErrorBody, target};
use crate::provision::Actor;
use crate::provision::app_passwords::{self as ops, AppPasswordJson, NewAppPasswordJson};
use crate::state::AppState;

/// A user's app passwords.
#[derive(Serialize, ToSchema)]
pub(super) struct AppPasswordList {
    items: Vec<AppPasswordJson>,
}

/// A new app password's label.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AppPasswordRequest {
    /// The device's name, unique per user ("Anna's phone"); 1 to 64 characters.
    label: String,
}

/// A user's app passwords by label, with their last use (never the passwords).
#[utoipa::path(
    get,
    path = "/domains/{domain}/users/{local}/app-passwords",
    operation_id = "listAppPasswords",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    responses(
        (status = 200, description = "The user's app passwords", body = AppPasswordList),
        (status = 404, description = "No such user in scope", body = ErrorBody),
    )
)]
pub(super) async fn list_app_passwords(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> ApiResult<Json<AppPasswordList>> {
    let address = target(&actor, &d, &l)?;
    let listed = ops::list(&state.roles, &actor, &address).await?;
    Ok(Json(AppPasswordList {
        items: listed.iter().map(AppPasswordJson::from).collect(),
    }))
}

/// Make an app password: pophost generates it, and this response is the only place it is
/// ever shown.
#[utoipa::path(
    post,
    path = "/domains/{domain}/users/{local}/app-passwords",
    operation_id = "createAppPassword",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    request_body = AppPasswordRequest,
    responses(
        (status = 201, description = "Made; the password is shown this once", body = NewAppPasswordJson),
        (status = 404, description = "No such user in scope", body = ErrorBody),
        (status = 409, description = "The user already has an app password with this label", body = ErrorBody),
        (status = 422, description = "A bad label, or the user has the most app passwords allowed", body = ErrorBody),
    )
)]
pub(super) async fn create_app_password(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Body(request): Body<AppPasswordRequest>,
) -> ApiResult<(StatusCode, Json<NewAppPasswordJson>)> {
    let address = target(&actor, &d, &l)?;
    let password = ops::add(&state.roles, &actor, &address, &request.label).await?;
    let body = NewAppPasswordJson {
        label: request.label.trim().to_string(),
        password,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Revoke an app password; a POP3 session logged in with it ends.
#[utoipa::path(
    delete,
    path = "/domains/{domain}/users/{local}/app-passwords/{label}",
    operation_id = "revokeAppPassword",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
        ("label" = String, Path, description = "The app password's label"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such user in scope, or no such label", body = ErrorBody),
    )
)]
pub(super) async fn revoke_app_password(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l, label)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let address = target(&actor, &d, &l)?;
    ops::revoke(&state.roles, &actor, &address, &label).await?;
    Ok(StatusCode::NO_CONTENT)
}

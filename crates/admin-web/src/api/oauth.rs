//! `/api/v1/domains/{domain}/oauth`: the domain's OAuth 2.0 sign-in settings — read (GET), set
//! or replace (PUT), turn off (DELETE); over `provision::oauth` like `pophost domain oauth`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiResult, Body, ErrorBody};
use crate::error::AppError;
use crate::provision::Actor;
use crate::provision::oauth::{self as ops, OAuthJson};
use crate::state::AppState;

/// The domain's OAuth settings.
#[utoipa::path(
    get,
    path = "/domains/{domain}/oauth",
    operation_id = "getDomainOAuth",
    params(("domain" = String, Path, description = "Domain name")),
    responses(
        (status = 200, description = "The settings", body = OAuthJson),
        (status = 404, description = "No such domain in scope, or OAuth is off", body = ErrorBody),
    )
)]
pub(super) async fn get_oauth(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> ApiResult<Json<OAuthJson>> {
    let domain = actor.domain(&raw)?;
    let settings = ops::get(&state.roles, &actor, &domain)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(Json(settings))
}

/// Sets (or replaces) the identity provider whose bearer tokens log the domain's users in
/// (POP3 and SMTP AUTH: OAUTHBEARER, XOAUTH2). A `jwks_file`, or an `http` `jwks_url`, only a
/// super admin may give.
#[utoipa::path(
    put,
    path = "/domains/{domain}/oauth",
    operation_id = "putDomainOAuth",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = OAuthJson,
    responses(
        (status = 200, description = "Stored", body = OAuthJson),
        (status = 403, description = "A key file or http URL from a domain admin", body = ErrorBody),
        (status = 404, description = "No such domain in scope", body = ErrorBody),
        (status = 422, description = "Invalid settings", body = ErrorBody),
    )
)]
pub(super) async fn put_oauth(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Body(body): Body<OAuthJson>,
) -> ApiResult<Json<OAuthJson>> {
    let domain = actor.domain(&raw)?;
    Ok(Json(ops::set(&state.roles, &actor, &domain, &body).await?))
}

/// Turns OAuth off for the domain: bearer tokens no longer log its users in.
#[utoipa::path(
    delete,
    path = "/domains/{domain}/oauth",
    operation_id = "deleteDomainOAuth",
    params(("domain" = String, Path, description = "Domain name")),
    responses(
        (status = 204, description = "Turned off"),
        (status = 404, description = "No such domain in scope, or OAuth was off", body = ErrorBody),
    )
)]
pub(super) async fn delete_oauth(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let domain = actor.domain(&raw)?;
    if ops::clear(&state.roles, &actor, &domain).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound.into())
    }
}

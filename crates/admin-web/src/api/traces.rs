//! `/api/v1/domains/{domain}/users/{local}/trace`: a user's protocol trace — start it for 1 to
//! 60 minutes (POST), read it (GET), stop it (DELETE); over `provision::traces` like the user
//! page and `pophost user trace`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiResult, Body, ErrorBody, target};
use crate::error::AppError;
use crate::provision::Actor;
use crate::provision::traces::{self as ops, TraceJson, TraceRequest};
use crate::state::AppState;

/// The user's trace with its lines (commands and first reply lines; secrets never recorded).
#[utoipa::path(
    get,
    path = "/domains/{domain}/users/{local}/trace",
    operation_id = "getUserTrace",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    responses(
        (status = 200, description = "The trace", body = TraceJson),
        (status = 404, description = "No such user in scope, or no trace", body = ErrorBody),
    )
)]
pub(super) async fn get_trace(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> ApiResult<Json<TraceJson>> {
    let address = target(&actor, &d, &l)?;
    let now = state.now();
    let (info, lines) = ops::get(&state.roles, &actor, &address, now)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(Json(TraceJson::new(&address, &info, &lines, now)))
}

/// Start recording the user's POP3 sessions for `minutes` (1 to 60), replacing any trace the
/// user had. Frontends pick it up within seconds.
#[utoipa::path(
    post,
    path = "/domains/{domain}/users/{local}/trace",
    operation_id = "startUserTrace",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    request_body = TraceRequest,
    responses(
        (status = 201, description = "Started", body = TraceJson),
        (status = 404, description = "No such user in scope", body = ErrorBody),
        (status = 422, description = "Minutes out of range", body = ErrorBody),
    )
)]
pub(super) async fn start_trace(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Body(body): Body<TraceRequest>,
) -> ApiResult<(StatusCode, Json<TraceJson>)> {
    let address = target(&actor, &d, &l)?;
    let now = state.now();
    let info = ops::start(&state.roles, &actor, &address, body.minutes, now).await?;
    Ok((
        StatusCode::CREATED,
        Json(TraceJson::new(&address, &info, &[], now)),
    ))
}

/// Stop recording; the trace stays readable until it expires.
#[utoipa::path(
    delete,
    path = "/domains/{domain}/users/{local}/trace",
    operation_id = "stopUserTrace",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    responses(
        (status = 204, description = "Stopped"),
        (status = 404, description = "No such user in scope, or no trace recording", body = ErrorBody),
    )
)]
pub(super) async fn stop_trace(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let address = target(&actor, &d, &l)?;
    if ops::stop(&state.roles, &actor, &address, state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound.into())
    }
}

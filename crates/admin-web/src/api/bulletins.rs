//! `/api/v1/bulletins`: post a notice into every mailbox of a domain (or, for super admins, of
//! every domain), now or at a time, and list the bulletins in scope; over
//! `provision::bulletins` like the Bulletins page and `pophost bulletin`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiResult, Body, ErrorBody};
use crate::provision::Actor;
use crate::provision::bulletins::{self as ops, BulletinJson, BulletinRequest};
use crate::state::AppState;

/// The bulletins in scope, newest first (a domain admin sees those of their domains).
#[utoipa::path(
    get,
    path = "/bulletins",
    operation_id = "listBulletins",
    responses((status = 200, description = "Bulletins, newest first", body = [BulletinJson]))
)]
pub(super) async fn list_bulletins(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<Json<Vec<BulletinJson>>> {
    let list = ops::list(&state.roles, &actor).await?;
    Ok(Json(list.iter().map(BulletinJson::from).collect()))
}

/// Post a bulletin. Without `at` (or with a past time) it is delivered before the answer, and
/// `recipients` says into how many mailboxes; otherwise it is `scheduled`.
#[utoipa::path(
    post,
    path = "/bulletins",
    operation_id = "postBulletin",
    request_body = BulletinRequest,
    responses(
        (status = 201, description = "Posted", body = BulletinJson),
        (status = 403, description = "All domains, by a domain admin", body = ErrorBody),
        (status = 404, description = "No such domain in scope", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
pub(super) async fn post_bulletin(
    State(state): State<AppState>,
    actor: Actor,
    Body(body): Body<BulletinRequest>,
) -> ApiResult<Response> {
    let posted = ops::post(&state.roles, &actor, &body, state.now()).await?;
    Ok((StatusCode::CREATED, Json(BulletinJson::from(&posted))).into_response())
}

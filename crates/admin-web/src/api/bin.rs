//! `/api/v1/domains/{domain}/users/{local}/bin`: a user's recycle bin (messages deleted over
//! POP3, by retention or by an admin), and restoring or purging from it, over `provision::bin`
//! like the user's bin page and `pophost user bin`.

use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiResult, Body, ErrorBody, Q, paging, target};
use crate::provision::bin::{self as ops, BinRequest, BinnedJson, PurgedJson, RestoredJson};
use crate::provision::{Actor, ListQuery};
use crate::state::AppState;

/// A page of a user's recycle bin.
#[derive(Serialize, ToSchema)]
pub(super) struct BinList {
    items: Vec<BinnedJson>,
    total: u64,
}

/// A user's recycle bin, most recently deleted first (q is ignored).
#[utoipa::path(
    get,
    path = "/domains/{domain}/users/{local}/bin",
    operation_id = "listUserBin",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
        ListQuery,
    ),
    responses(
        (status = 200, description = "A page of the bin", body = BinList,
         headers(("Link" = String, description = "RFC 8288 links to the first, previous, next and last pages"))),
        (status = 404, description = "No such user in scope", body = ErrorBody),
    )
)]
pub(super) async fn list_bin(
    State(state): State<AppState>,
    actor: Actor,
    OriginalUri(uri): OriginalUri,
    Path((d, l)): Path<(String, String)>,
    Q(query): Q<ListQuery>,
) -> ApiResult<Response> {
    let address = target(&actor, &d, &l)?;
    let size = query.page_size(state.config.page_size);
    let page = ops::bin_page(&state.roles, &actor, &address, query.offset(size), size).await?;
    let paging = paging::Paging::new(query.page_within(page.total, size), page.total, size);
    let body = BinList {
        items: page.items.iter().map(BinnedJson::from).collect(),
        total: page.total,
    };
    Ok(paging::paged(&uri, paging, body))
}

/// Restore messages from the bin: with their UIDL (clients that deleted them do not fetch them
/// again), or with `as_new` a new one. Not refused for quota.
#[utoipa::path(
    post,
    path = "/domains/{domain}/users/{local}/bin/restore",
    operation_id = "restoreUserBin",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    request_body = BinRequest,
    responses(
        (status = 200, description = "What was restored", body = RestoredJson),
        (status = 404, description = "No such user in scope", body = ErrorBody),
        (status = 422, description = "Not exactly one selection", body = ErrorBody),
    )
)]
pub(super) async fn restore_bin(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Body(request): Body<BinRequest>,
) -> ApiResult<Json<RestoredJson>> {
    let address = target(&actor, &d, &l)?;
    let which = request.selection()?;
    let report = ops::restore(&state.roles, &actor, &address, &which, request.as_new).await?;
    Ok(Json(RestoredJson::from(report)))
}

/// Delete messages from the bin for good.
#[utoipa::path(
    post,
    path = "/domains/{domain}/users/{local}/bin/purge",
    operation_id = "purgeUserBin",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    request_body = BinRequest,
    responses(
        (status = 200, description = "How many were purged", body = PurgedJson),
        (status = 404, description = "No such user in scope", body = ErrorBody),
        (status = 422, description = "Not exactly one selection", body = ErrorBody),
    )
)]
pub(super) async fn purge_bin(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Body(request): Body<BinRequest>,
) -> ApiResult<Json<PurgedJson>> {
    let address = target(&actor, &d, &l)?;
    let which = request.selection()?;
    let purged = ops::purge(&state.roles, &actor, &address, &which).await?;
    Ok(Json(PurgedJson { purged }))
}

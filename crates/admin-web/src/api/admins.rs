//! `/api/v1/admins`: admin accounts for super admins' scripts (a domain admin's token gets 403),
//! over the same `provision::admins` operations as the admins page and `pophost admin`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, Body, ErrorBody};
use crate::provision::Actor;
use crate::provision::admins::{self as ops, AdminJson, scope_of};
use crate::state::AppState;

/// Every admin account.
#[derive(Serialize, ToSchema)]
pub(super) struct AdminList {
    items: Vec<AdminJson>,
    total: u64,
}

/// Every admin account, by e-mail (super admin).
#[utoipa::path(
    get,
    path = "/admins",
    operation_id = "listAdmins",
    responses(
        (status = 200, description = "The admins", body = AdminList),
        (status = 403, description = "Not a super admin", body = ErrorBody),
    )
)]
pub(super) async fn list_admins(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<Json<AdminList>> {
    let admins = ops::list_admins(&state.roles, &actor).await?;
    Ok(Json(AdminList {
        total: admins.len() as u64,
        items: admins.iter().map(AdminJson::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAdmin {
    email: String,
    /// At least 12 characters.
    password: String,
    /// A super admin reaches every domain; otherwise `domains` are required.
    #[serde(default)]
    super_admin: bool,
    #[serde(default)]
    domains: Vec<String>,
}

/// Add an admin (super admin).
#[utoipa::path(
    post,
    path = "/admins",
    operation_id = "createAdmin",
    request_body = NewAdmin,
    responses(
        (status = 201, description = "Created", body = AdminJson),
        (status = 403, description = "Not a super admin", body = ErrorBody),
        (status = 404, description = "A domain does not exist", body = ErrorBody),
        (status = 409, description = "The admin exists", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
pub(super) async fn create_admin(
    State(state): State<AppState>,
    actor: Actor,
    Body(body): Body<NewAdmin>,
) -> ApiResult<Response> {
    actor.require_super()?;
    let scope = scope_of(body.super_admin, &body.domains)?;
    ops::create_admin(&state.roles, &actor, &body.email, body.password, &scope).await?;
    let created = ops::admin(&state.roles, &actor, &body.email).await?;
    Ok((StatusCode::CREATED, Json(AdminJson::from(&created))).into_response())
}

/// An admin (super admin).
#[utoipa::path(
    get,
    path = "/admins/{email}",
    operation_id = "getAdmin",
    params(("email" = String, Path, description = "The admin's e-mail address")),
    responses(
        (status = 200, description = "The admin", body = AdminJson),
        (status = 403, description = "Not a super admin", body = ErrorBody),
        (status = 404, description = "No such admin", body = ErrorBody),
    )
)]
pub(super) async fn get_admin(
    State(state): State<AppState>,
    actor: Actor,
    Path(email): Path<String>,
) -> ApiResult<Json<AdminJson>> {
    let a = ops::admin(&state.roles, &actor, &email).await?;
    Ok(Json(AdminJson::from(&a)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminPatch {
    /// With `domains`: the new scope (`super_admin: true`, or `false` with domains).
    #[serde(default)]
    super_admin: Option<bool>,
    #[serde(default)]
    domains: Option<Vec<String>>,
    /// A new password: the admin's sessions end and their tokens are revoked.
    #[serde(default)]
    password: Option<String>,
    /// Disabling ends the admin's sessions and revokes their tokens.
    #[serde(default)]
    disabled: Option<bool>,
}

/// Change an admin's scope, password or whether they are disabled (super admin); absent
/// fields are kept.
#[utoipa::path(
    patch,
    path = "/admins/{email}",
    operation_id = "updateAdmin",
    params(("email" = String, Path, description = "The admin's e-mail address")),
    request_body = AdminPatch,
    responses(
        (status = 200, description = "The admin after the change", body = AdminJson),
        (status = 403, description = "Not a super admin", body = ErrorBody),
        (status = 404, description = "No such admin, or a domain does not exist", body = ErrorBody),
        (status = 409, description = "It would leave no enabled super admin", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
pub(super) async fn patch_admin(
    State(state): State<AppState>,
    actor: Actor,
    Path(email): Path<String>,
    Body(patch): Body<AdminPatch>,
) -> ApiResult<Json<AdminJson>> {
    let before = ops::admin(&state.roles, &actor, &email).await?;
    let email = before.account.email;
    // Everything is checked before anything changes.
    let scope = match (patch.super_admin, &patch.domains) {
        (None, None) => None,
        (s, d) => Some(scope_of(
            s.unwrap_or(false),
            d.as_deref().unwrap_or_default(),
        )?),
    };
    if let Some(p) = &patch.password {
        crate::password::password_problem(p, crate::PasswordFor::Admin)
            .map_err(crate::provision::Error::from)?;
    }
    if let Some(scope) = &scope {
        ops::set_scope(&state.roles, &actor, &email, scope).await?;
    }
    if let Some(password) = patch.password {
        ops::set_password(&state.roles, &actor, &email, password).await?;
    }
    if let Some(disabled) = patch.disabled {
        ops::set_disabled(&state.roles, &actor, &email, disabled).await?;
    }
    let after = ops::admin(&state.roles, &actor, &email).await?;
    Ok(Json(AdminJson::from(&after)))
}

/// Remove an admin with their sessions and tokens (super admin).
#[utoipa::path(
    delete,
    path = "/admins/{email}",
    operation_id = "deleteAdmin",
    params(("email" = String, Path, description = "The admin's e-mail address")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Not a super admin", body = ErrorBody),
        (status = 404, description = "No such admin", body = ErrorBody),
        (status = 409, description = "The last enabled super admin", body = ErrorBody),
        (status = 422, description = "The token's own admin", body = ErrorBody),
    )
)]
pub(super) async fn delete_admin(
    State(state): State<AppState>,
    actor: Actor,
    Path(email): Path<String>,
) -> ApiResult<StatusCode> {
    ops::remove(&state.roles, &actor, &email).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use mailstore::{AdminAccount, AdminId, AdminListing, DomainName, Scope};
    use serde_json::Value;

    use super::*;

    /// Like the main API test: the `Admin` schema requires exactly the fields sent.
    #[test]
    fn the_admin_schema_requires_exactly_the_fields_sent() {
        let (_, doc) = crate::api::routes();
        let doc = serde_json::to_value(&doc).expect("document");
        let schema = &doc["components"]["schemas"]["Admin"];
        let listing = AdminListing {
            account: AdminAccount {
                id: AdminId(1),
                email: "anna@example.com".into(),
                password_hash: "secret".into(),
                scope: Scope::Domains(vec![DomainName::parse("a.example").expect("d")]),
                disabled: false,
                last_signin_at: None,
                last_signin_ip: None,
            },
            tokens: 0,
        };
        let sent = serde_json::to_value(AdminJson::from(&listing)).expect("json");
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut keys: Vec<&str> = sent
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        required.sort();
        keys.sort();
        assert_eq!(required, keys);
        assert!(!sent.to_string().contains("secret"), "no password material");
        for op in [
            "listAdmins",
            "createAdmin",
            "getAdmin",
            "updateAdmin",
            "deleteAdmin",
        ] {
            assert!(doc.to_string().contains(op), "{op} is documented");
        }
    }
}

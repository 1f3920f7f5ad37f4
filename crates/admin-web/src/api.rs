//! `/api/v1`: JSON provisioning for scripts. The same `Actor` gates as the pages, and the same
//! store operations (`pages::domains`, `pages::users`), so an API change is audited exactly like
//! one made in the browser.

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use mailstore::{Address, DomainDetail, DomainName, LocalPart, LoginForm, QuotaChange, UserDetail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::auth::{Actor, Audit};
use crate::error::{ApiError, AppError};
use crate::pages::ListQuery;
use crate::pages::domains::{self, detail, login_forms};
use crate::pages::users::{self, address, user};
use crate::state::AppState;

/// Routes under `/api/v1` that need a bearer token.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains", get(list_domains).post(create_domain))
        .route(
            "/domains/{domain}",
            get(get_domain).patch(patch_domain).delete(delete_domain),
        )
        .route(
            "/domains/{domain}/policies",
            get(crate::pages::policies::api_get).patch(crate::pages::policies::api_patch),
        )
        .route("/domains/{domain}/users", get(list_users).post(create_user))
        .route(
            "/domains/{domain}/users/{local}",
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route("/sessions", get(list_sessions))
        .route("/sessions/{address}", delete(end_session))
}

/// Routes that need none: the OpenAPI document.
pub fn public_routes() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(|| async { Json(openapi()) }))
}

/// A domain as the API shows it, and as the audit log records it.
pub fn domain_json(d: &DomainDetail) -> Value {
    json!({
        "name": d.name.as_str(),
        "quota_bytes": d.quota.bytes,
        "quota_messages": d.quota.messages,
        "used_bytes": d.usage.bytes,
        "used_messages": d.usage.messages,
        "users": d.users,
        "max_users": d.max_users,
        "login_forms": LoginForm::ALL
            .into_iter()
            .filter(|f| d.login_forms.allows(*f))
            .map(LoginForm::name)
            .collect::<Vec<_>>(),
        "allow_apop": d.allow_apop,
        "enabled": d.enabled,
        "aliases": d.aliases.iter().map(DomainName::as_str).collect::<Vec<_>>(),
    })
}

/// A user as the API shows it, and as the audit log records it (no password material).
pub fn user_json(u: &UserDetail) -> Value {
    json!({
        "address": u.address.to_string(),
        "local": u.address.local.as_str(),
        "domain": u.address.domain.as_str(),
        "quota_bytes": u.quota.bytes,
        "quota_messages": u.quota.messages,
        "used_bytes": u.usage.bytes,
        "used_messages": u.usage.messages,
        "enabled": u.enabled,
        "created_at": u.created_at,
    })
}

/// A JSON body whose rejection is the API's own `422 {"error": ...}`, not axum's plain text.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Body(v))
            .map_err(|e| ApiError(AppError::BadRequest(e.body_text())))
    }
}

/// A query string, rejected the same way as `Body`.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Q(v))
            .map_err(|e| ApiError(AppError::BadRequest(e.body_text())))
    }
}

/// For PATCH: `Some(None)` when the field is `null`, `None` (by `default`) when it is absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

type ApiResult<T> = Result<T, ApiError>;

fn page_json(items: Vec<Value>, total: u64) -> Json<Value> {
    Json(json!({ "items": items, "total": total }))
}

// ---------------------------------------------------------------------------------------------
// Domains.

async fn list_domains(
    State(state): State<AppState>,
    actor: Actor,
    Q(query): Q<ListQuery>,
) -> ApiResult<Json<Value>> {
    let size = state.config.page_size;
    let page = state
        .store
        .domain_page(&actor.scope, query.q.trim(), query.offset(size), size)
        .await?;
    Ok(page_json(
        page.items.iter().map(domain_json).collect(),
        page.total,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDomain {
    name: String,
    #[serde(default)]
    quota_bytes: Option<u64>,
    #[serde(default)]
    quota_messages: Option<u64>,
    #[serde(default)]
    max_users: Option<u64>,
}

async fn create_domain(
    State(state): State<AppState>,
    actor: Actor,
    Body(body): Body<NewDomain>,
) -> ApiResult<Response> {
    actor.require_super()?;
    let name = DomainName::parse(&body.name)?;
    let name = actor.domain(name.as_str())?;
    let created = domains::create_domain(&state, &actor, &name, |s| {
        s.quota.bytes = body.quota_bytes;
        s.quota.messages = body.quota_messages;
        s.max_users = body.max_users;
        body.quota_bytes.is_some() || body.quota_messages.is_some() || body.max_users.is_some()
    })
    .await?;
    Ok((StatusCode::CREATED, Json(domain_json(&created))).into_response())
}

async fn get_domain(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let name = actor.domain(&raw)?;
    Ok(Json(domain_json(&detail(&state, &name).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainPatch {
    #[serde(default, deserialize_with = "present")]
    quota_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    quota_messages: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_users: Option<Option<u64>>,
    #[serde(default)]
    login_forms: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

async fn patch_domain(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Body(patch): Body<DomainPatch>,
) -> ApiResult<Json<Value>> {
    let name = actor.domain(&raw)?;
    actor.require_super()?;
    let before = detail(&state, &name).await?;
    let mut settings = domains::settings_of(&before);
    if let Some(v) = patch.quota_bytes {
        settings.quota.bytes = v;
    }
    if let Some(v) = patch.quota_messages {
        settings.quota.messages = v;
    }
    if let Some(v) = patch.max_users {
        settings.max_users = v;
    }
    if let Some(names) = &patch.login_forms {
        settings.login_forms = login_forms(names).map_err(AppError::BadRequest)?;
    }
    if let Some(v) = patch.enabled {
        settings.enabled = v;
    }
    let after = domains::update_domain(&state, &actor, &before, &settings).await?;
    Ok(Json(domain_json(&after)))
}

#[derive(Debug, Default, Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_domain(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Q(query): Q<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let name = actor.domain(&raw)?;
    domains::delete_domain(&state, &actor, &name, query.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Users.

async fn list_users(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Q(query): Q<ListQuery>,
) -> ApiResult<Json<Value>> {
    let name = detail(&state, &actor.domain(&raw)?).await?.name;
    let size = state.config.page_size;
    let page = state
        .store
        .user_page(&name, query.q.trim(), query.offset(size), size)
        .await?;
    Ok(page_json(
        page.items.iter().map(user_json).collect(),
        page.total,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    local: String,
    password: String,
    #[serde(default)]
    quota_bytes: Option<u64>,
    #[serde(default)]
    quota_messages: Option<u64>,
}

async fn create_user(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Body(body): Body<NewUser>,
) -> ApiResult<Response> {
    let domain = actor.domain(&raw)?;
    let address = Address {
        local: LocalPart::parse(&body.local)?,
        domain,
    };
    let quota = QuotaChange {
        bytes: body.quota_bytes.map(Some),
        messages: body.quota_messages.map(Some),
    };
    let created = users::create_user(&state, &actor, &address, body.password, quota).await?;
    Ok((StatusCode::CREATED, Json(user_json(&created))).into_response())
}

/// The user a URL names, if the actor may reach its domain.
async fn target(
    state: &AppState,
    actor: &Actor,
    raw_domain: &str,
    raw_local: &str,
) -> Result<UserDetail, AppError> {
    let domain = actor.domain(raw_domain)?;
    user(state, &address(&domain, raw_local)?).await
}

async fn get_user(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(user_json(&target(&state, &actor, &d, &l).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    #[serde(default)]
    password: Option<String>,
    #[serde(default, deserialize_with = "present")]
    quota_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    quota_messages: Option<Option<u64>>,
    #[serde(default)]
    enabled: Option<bool>,
}

async fn patch_user(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Body(patch): Body<UserPatch>,
) -> ApiResult<Json<Value>> {
    let mut current = target(&state, &actor, &d, &l).await?;
    // Everything is checked before anything is changed.
    if let Some(pw) = &patch.password {
        users::password_problem(pw).map_err(AppError::BadRequest)?;
    }
    let quota = QuotaChange {
        bytes: patch.quota_bytes,
        messages: patch.quota_messages,
    };
    if quota != QuotaChange::default() {
        current = users::set_quota(&state, &actor, &current, quota).await?;
    }
    if let Some(pw) = patch.password {
        users::set_password(&state, &actor, &current, pw).await?;
    }
    if let Some(enabled) = patch.enabled {
        current = users::set_enabled(&state, &actor, &current, enabled).await?;
    }
    Ok(Json(user_json(&current)))
}

async fn delete_user(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let before = target(&state, &actor, &d, &l).await?;
    users::delete_user(&state, &actor, &before).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Sessions.

async fn list_sessions(State(state): State<AppState>, actor: Actor) -> ApiResult<Json<Value>> {
    let sessions = state.store.live_sessions(&actor.scope).await?;
    Ok(Json(Value::Array(
        sessions
            .iter()
            .map(|s| json!({ "address": s.address.to_string(), "node": s.node, "since": s.since }))
            .collect(),
    )))
}

async fn end_session(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let parsed = Address::parse(&raw).map_err(|_| AppError::NotFound)?;
    let address = Address {
        domain: actor.domain(parsed.domain.as_str())?,
        local: parsed.local,
    };
    if !state.store.break_lock(&address).await? {
        return Err(AppError::NotFound.into());
    }
    let object = address.to_string();
    actor
        .audit(
            &state,
            Audit::new("session.end", &object, Some(&address.domain)),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document.

/// The API described for clients and generators. Paths are relative to the server `/api/v1`;
/// the router tests check that every path and method here is served.
pub fn openapi() -> Value {
    let reference = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let body = |name: &str| json!({ "required": true, "content": { "application/json": { "schema": reference(name) } } });
    let ok = |description: &str, schema: Value| json!({ "description": description, "content": { "application/json": { "schema": schema } } });
    let error = |description: &str| ok(description, reference("Error"));
    let no_content = |description: &str| json!({ "description": description });
    let min_password = crate::password::PasswordFor::Mailbox.min_chars();
    let path_param = |name: &str, description: &str| {
        json!({ "name": name, "in": "path", "required": true, "description": description,
                "schema": { "type": "string" } })
    };
    let list_params = json!([
        { "name": "q", "in": "query", "required": false, "description": "Substring to search for",
          "schema": { "type": "string" } },
        { "name": "page", "in": "query", "required": false, "description": "1-based page number",
          "schema": { "type": "integer", "minimum": 1 } }
    ]);
    let domain = path_param("domain", "Domain name");
    let local = path_param("local", "Local part of the address (before the @)");
    let address = path_param("address", "Mailbox address user@domain");
    let limit = |description: &str| {
        json!({ "type": "integer", "format": "int64", "minimum": 0, "nullable": true,
                "description": description })
    };
    let common = |mut responses: Value| {
        responses["401"] = error("Missing or invalid bearer token");
        responses
    };

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "pophost admin API",
            "version": "1",
            "description": "Provisioning of domains and mailboxes. A domain admin's token reaches \
                            only that admin's domains; others answer 404. Creating, changing and \
                            deleting domains is for super admins (403 otherwise)."
        },
        "servers": [{ "url": "/api/v1" }],
        "security": [{ "bearer": [] }],
        "paths": {
            "/domains": {
                "get": {
                    "operationId": "listDomains",
                    "summary": "Domains in the token's scope whose name contains q",
                    "parameters": list_params,
                    "responses": common(json!({ "200": ok("A page of domains", reference("DomainList")) }))
                },
                "post": {
                    "operationId": "createDomain",
                    "summary": "Create a domain (super admin)",
                    "requestBody": body("NewDomain"),
                    "responses": common(json!({
                        "201": ok("Created", reference("Domain")),
                        "403": error("Not a super admin"),
                        "409": error("The domain (or an alias of that name) exists"),
                        "422": error("Invalid input")
                    }))
                }
            },
            "/domains/{domain}": {
                "parameters": [domain],
                "get": {
                    "operationId": "getDomain",
                    "responses": common(json!({
                        "200": ok("The domain", reference("Domain")),
                        "404": error("No such domain in scope")
                    }))
                },
                "patch": {
                    "operationId": "updateDomain",
                    "summary": "Change a domain's settings (super admin); absent fields are kept, null means unlimited",
                    "requestBody": body("DomainPatch"),
                    "responses": common(json!({
                        "200": ok("The domain after the change", reference("Domain")),
                        "403": error("Not a super admin"),
                        "404": error("No such domain in scope"),
                        "409": error("Conflict"),
                        "422": error("Invalid input")
                    }))
                },
                "delete": {
                    "operationId": "deleteDomain",
                    "summary": "Delete a domain (super admin)",
                    "parameters": [{
                        "name": "force", "in": "query", "required": false,
                        "description": "Also delete the domain's users and their mail",
                        "schema": { "type": "boolean", "default": false }
                    }],
                    "responses": common(json!({
                        "204": no_content("Deleted"),
                        "403": error("Not a super admin"),
                        "404": error("No such domain in scope"),
                        "409": error("The domain still has users and force is not set")
                    }))
                }
            },
            "/domains/{domain}/policies": {
                "parameters": [domain],
                "get": {
                    "operationId": "getDomainPolicies",
                    "summary": "A domain's mailbox policies: quota refusal, warning, retention (EXPIRE), LOGIN-DELAY",
                    "responses": common(json!({
                        "200": ok("The policies", reference("DomainPolicies")),
                        "404": error("No such domain in scope")
                    }))
                },
                "patch": {
                    "operationId": "updateDomainPolicies",
                    "summary": "Change a domain's policies (super admin); absent fields are kept, null means none",
                    "requestBody": body("DomainPoliciesPatch"),
                    "responses": common(json!({
                        "200": ok("The policies after the change", reference("DomainPolicies")),
                        "403": error("Not a super admin"),
                        "404": error("No such domain in scope"),
                        "422": error("Invalid input")
                    }))
                }
            },
            "/domains/{domain}/users": {
                "parameters": [domain],
                "get": {
                    "operationId": "listUsers",
                    "summary": "Users of the domain whose local part contains q",
                    "parameters": list_params,
                    "responses": common(json!({
                        "200": ok("A page of users", reference("UserList")),
                        "404": error("No such domain in scope")
                    }))
                },
                "post": {
                    "operationId": "createUser",
                    "requestBody": body("NewUser"),
                    "responses": common(json!({
                        "201": ok("Created", reference("User")),
                        "404": error("No such domain in scope"),
                        "409": error("The user exists, or the domain is at its user limit"),
                        "422": error(&format!("Invalid input (name, password shorter than {min_password} characters)"))
                    }))
                }
            },
            "/domains/{domain}/users/{local}": {
                "parameters": [domain, local],
                "get": {
                    "operationId": "getUser",
                    "responses": common(json!({
                        "200": ok("The user", reference("User")),
                        "404": error("No such user in scope")
                    }))
                },
                "patch": {
                    "operationId": "updateUser",
                    "summary": "Change a user; absent fields are kept, a null quota means unlimited",
                    "requestBody": body("UserPatch"),
                    "responses": common(json!({
                        "200": ok("The user after the change", reference("User")),
                        "404": error("No such user in scope"),
                        "422": error("Invalid input")
                    }))
                },
                "delete": {
                    "operationId": "deleteUser",
                    "summary": "Delete a user and all their mail",
                    "responses": common(json!({
                        "204": no_content("Deleted"),
                        "404": error("No such user in scope")
                    }))
                }
            },
            "/sessions": {
                "get": {
                    "operationId": "listSessions",
                    "summary": "Maildrops locked by live POP3 sessions, in scope",
                    "responses": common(json!({
                        "200": ok("Live sessions", json!({ "type": "array", "items": reference("Session") }))
                    }))
                }
            },
            "/sessions/{address}": {
                "parameters": [address],
                "delete": {
                    "operationId": "endSession",
                    "summary": "Break the maildrop lock; the session ends at its next lease renewal",
                    "responses": common(json!({
                        "204": no_content("Lock broken"),
                        "404": error("No locked maildrop of that address in scope")
                    }))
                }
            }
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer",
                            "description": "An API token created on the admin UI's token page" }
            },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "string" } }
                },
                "Domain": {
                    "type": "object",
                    "required": ["name", "quota_bytes", "quota_messages", "used_bytes", "used_messages",
                                 "users", "max_users", "login_forms", "allow_apop", "enabled", "aliases"],
                    "properties": {
                        "name": { "type": "string" },
                        "quota_bytes": limit("Byte quota; null is unlimited"),
                        "quota_messages": limit("Message quota; null is unlimited"),
                        "used_bytes": { "type": "integer", "format": "int64" },
                        "used_messages": { "type": "integer", "format": "int64" },
                        "users": { "type": "integer", "format": "int64" },
                        "max_users": limit("Most users; null is unlimited"),
                        "login_forms": { "type": "array", "items": reference("LoginForm") },
                        "allow_apop": { "type": "boolean" },
                        "enabled": { "type": "boolean" },
                        "aliases": { "type": "array", "items": { "type": "string" } }
                    }
                },
                "DomainPolicies": {
                    "type": "object",
                    "required": ["quota_tempfail", "quota_warn_percent", "retention_days", "login_delay_secs"],
                    "properties": {
                        "quota_tempfail": { "type": "boolean",
                            "description": "Over quota: 452 4.2.2 (retry) instead of 552 5.2.2" },
                        "quota_warn_percent": { "type": "integer", "minimum": 1, "maximum": 100, "nullable": true,
                            "description": "Usage that delivers a one-time warning; null is none" },
                        "retention_days": { "type": "integer", "minimum": 1, "maximum": 36500, "nullable": true,
                            "description": "Messages older than this are deleted (CAPA EXPIRE); null is never" },
                        "login_delay_secs": { "type": "integer", "minimum": 1, "maximum": 31536000, "nullable": true,
                            "description": "Least time between POP3 logins (CAPA LOGIN-DELAY); null is none" }
                    }
                },
                "DomainPoliciesPatch": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "quota_tempfail": { "type": "boolean" },
                        "quota_warn_percent": { "type": "integer", "minimum": 1, "maximum": 100, "nullable": true },
                        "retention_days": { "type": "integer", "minimum": 1, "maximum": 36500, "nullable": true },
                        "login_delay_secs": { "type": "integer", "minimum": 1, "maximum": 31536000, "nullable": true }
                    }
                },
                "LoginForm": {
                    "type": "string", "enum": ["at", "percent", "plus", "bare"],
                    "description": "john@example.com, john%example.com, john+example.com, john"
                },
                "DomainList": {
                    "type": "object", "required": ["items", "total"],
                    "properties": {
                        "items": { "type": "array", "items": reference("Domain") },
                        "total": { "type": "integer", "format": "int64" }
                    }
                },
                "NewDomain": {
                    "type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": {
                        "name": { "type": "string" },
                        "quota_bytes": limit("Byte quota; absent or null is unlimited"),
                        "quota_messages": limit("Message quota; absent or null is unlimited"),
                        "max_users": limit("Most users; absent or null is unlimited")
                    }
                },
                "DomainPatch": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "quota_bytes": limit("Byte quota; null is unlimited"),
                        "quota_messages": limit("Message quota; null is unlimited"),
                        "max_users": limit("Most users; null is unlimited"),
                        "login_forms": { "type": "array", "minItems": 1, "items": reference("LoginForm") },
                        "enabled": { "type": "boolean" }
                    }
                },
                "User": {
                    "type": "object",
                    "required": ["address", "local", "domain", "quota_bytes", "quota_messages",
                                 "used_bytes", "used_messages", "enabled", "created_at"],
                    "properties": {
                        "address": { "type": "string" },
                        "local": { "type": "string" },
                        "domain": { "type": "string" },
                        "quota_bytes": limit("Byte quota; null is unlimited"),
                        "quota_messages": limit("Message quota; null is unlimited"),
                        "used_bytes": { "type": "integer", "format": "int64" },
                        "used_messages": { "type": "integer", "format": "int64" },
                        "enabled": { "type": "boolean" },
                        "created_at": { "type": "integer", "format": "int64",
                                        "description": "Unix milliseconds" }
                    }
                },
                "UserList": {
                    "type": "object", "required": ["items", "total"],
                    "properties": {
                        "items": { "type": "array", "items": reference("User") },
                        "total": { "type": "integer", "format": "int64" }
                    }
                },
                "NewUser": {
                    "type": "object", "required": ["local", "password"], "additionalProperties": false,
                    "properties": {
                        "local": { "type": "string" },
                        "password": { "type": "string", "minLength": min_password, "format": "password" },
                        "quota_bytes": limit("Byte quota; absent or null is unlimited"),
                        "quota_messages": limit("Message quota; absent or null is unlimited")
                    }
                },
                "UserPatch": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "password": { "type": "string", "minLength": min_password, "format": "password" },
                        "quota_bytes": limit("Byte quota; null is unlimited"),
                        "quota_messages": limit("Message quota; null is unlimited"),
                        "enabled": { "type": "boolean" }
                    }
                },
                "Session": {
                    "type": "object", "required": ["address", "node", "since"],
                    "properties": {
                        "address": { "type": "string" },
                        "node": { "type": "string", "description": "The frontend holding the lock" },
                        "since": { "type": "integer", "format": "int64", "description": "Unix milliseconds" }
                    }
                }
            }
        }
    })
}

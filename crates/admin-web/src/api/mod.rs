//! `/api/v1`: JSON provisioning for scripts, an adapter over `provision` (the same operations,
//! scope checks and audit records as the pages and the CLI). The OpenAPI document is generated
//! from the handlers' `#[utoipa::path]` annotations and the types they take and return, and the
//! router is built from the same list of handlers, so the two cannot drift apart.

mod activity;
mod admins;
mod alarms;
mod app_passwords;
mod bin;
mod bulletins;
mod oauth;
mod paging;
mod traces;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, OriginalUri, Path, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mailstore::{Address, DomainName, LocalPart, QuotaChange};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, AppError};
use crate::provision::accounts::{self, Outcome, Summary};
use crate::provision::{
    self, Actor, Audit, DomainChange, DomainJson, LimitJson, ListQuery, PoliciesJson, PolicyChange,
    SessionJson, SessionQuery, Unit, UserChange, UserJson,
};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pophost admin API",
        version = "1",
        description = "Provisioning of domains and mailboxes. A domain admin's token reaches \
                       only that admin's domains; others answer 404. Creating, changing and \
                       deleting domains is for super admins (403 otherwise). Limits (quotas, \
                       max_users) are whole numbers or text such as \"10K\", \"500M\" or \
                       \"unlimited\", read as the admin UI and `pophost` read them."
    ),
    servers((url = "/api/v1")),
    security(("bearer" = [])),
    modifiers(&BearerScheme)
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, doc: &mut Document) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API token created on the admin UI's token page"))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Routes under `/api/v1` that need a bearer token, and the OpenAPI document describing them.
pub fn routes() -> (Router<AppState>, Document) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_domains, create_domain))
        .routes(routes!(get_domain, patch_domain, delete_domain))
        .routes(routes!(get_policies, patch_policies))
        .routes(routes!(
            oauth::get_oauth,
            oauth::put_oauth,
            oauth::delete_oauth
        ))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(activity::get_activity))
        .routes(routes!(bin::list_bin))
        .routes(routes!(bin::restore_bin))
        .routes(routes!(bin::purge_bin))
        .routes(routes!(
            app_passwords::list_app_passwords,
            app_passwords::create_app_password
        ))
        .routes(routes!(app_passwords::revoke_app_password))
        .routes(routes!(
            traces::get_trace,
            traces::start_trace,
            traces::stop_trace
        ))
        .routes(routes!(alarms::get_user_alarms))
        .routes(routes!(alarms::list_alarms))
        .routes(routes!(bulletins::list_bulletins, bulletins::post_bulletin))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(import_users))
                .layer(DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .routes(routes!(list_sessions))
        .routes(routes!(end_session))
        .routes(routes!(admins::list_admins, admins::create_admin))
        .routes(routes!(
            admins::get_admin,
            admins::patch_admin,
            admins::delete_admin
        ))
        .split_for_parts();
    every_operation_may_be_unauthorized(&mut doc);
    (router.merge(user_named_import()), doc)
}

/// The router matches `/users/import` before `/users/{local}`, so without these the user named
/// `import` could not be read, changed or deleted (405). The document already lists them under
/// `/domains/{domain}/users/{local}`.
fn user_named_import() -> Router<AppState> {
    fn named(Path(d): Path<String>) -> Path<(String, String)> {
        Path((d, "import".into()))
    }
    Router::new().route(
        "/domains/{domain}/users/import",
        get(|s: State<AppState>, a: Actor, d: Path<String>| get_user(s, a, named(d)))
            .patch(
                |s: State<AppState>, a: Actor, d: Path<String>, b: Body<UserPatch>| {
                    patch_user(s, a, named(d), b)
                },
            )
            .delete(|s: State<AppState>, a: Actor, d: Path<String>| delete_user(s, a, named(d))),
    )
}

/// The route that needs no token: the OpenAPI document.
pub fn public_routes(doc: Document) -> Router<AppState> {
    let doc = serde_json::to_value(&doc).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document does not serialize");
        Value::Null
    });
    Router::new().route(
        "/api/v1/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { Json(doc) }
        }),
    )
}

/// Every operation answers 401 without a valid token (the `auth::api` layer, not the handler).
fn every_operation_may_be_unauthorized(doc: &mut Document) {
    let response = ResponseBuilder::new()
        .description("Missing or invalid bearer token")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            op.responses
                .responses
                .entry("401".into())
                .or_insert_with(|| response.clone().into());
        }
    }
}

/// An error, as every failed call answers.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)] // Written by `ApiError`; this type only describes it.
struct ErrorBody {
    error: String,
}

/// A page of domains.
#[derive(Serialize, ToSchema)]
struct DomainList {
    items: Vec<DomainJson>,
    total: u64,
}

/// A page of users.
#[derive(Serialize, ToSchema)]
struct UserList {
    items: Vec<UserJson>,
    total: u64,
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

/// A limit of a body: absent or null is `None`, otherwise what the one limit parser reads.
fn limit(value: Option<&LimitJson>, unit: Unit) -> Result<Option<u64>, AppError> {
    match value {
        None => Ok(None),
        Some(v) => v
            .value(unit)
            .map_err(|e| AppError::BadRequest(e.to_string())),
    }
}

/// A PATCH limit: absent keeps it (`None`), null or a value sets it.
fn limit_change(
    value: Option<&Option<LimitJson>>,
    unit: Unit,
) -> Result<Option<Option<u64>>, AppError> {
    value.map(|v| limit(v.as_ref(), unit)).transpose()
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------------
// Domains.

/// Domains in the token's scope whose name contains q.
#[utoipa::path(
    get,
    path = "/domains",
    operation_id = "listDomains",
    params(ListQuery),
    responses((status = 200, description = "A page of domains", body = DomainList,
               headers(("Link" = String, description = "RFC 8288 links to the first, previous, next and last pages"))))
)]
async fn list_domains(
    State(state): State<AppState>,
    actor: Actor,
    OriginalUri(uri): OriginalUri,
    Q(query): Q<ListQuery>,
) -> ApiResult<Response> {
    let size = query.page_size(state.config.page_size);
    let page = provision::domains(&state.roles, &actor, &query, size).await?;
    let paging = paging::Paging::new(query.page_within(page.total, size), page.total, size);
    let body = DomainList {
        items: page.items.iter().map(DomainJson::from).collect(),
        total: page.total,
    };
    Ok(paging::paged(&uri, paging, body))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewDomain {
    name: String,
    /// Byte quota; absent or null is unlimited.
    #[serde(default)]
    quota_bytes: Option<LimitJson>,
    /// Message quota; absent or null is unlimited.
    #[serde(default)]
    quota_messages: Option<LimitJson>,
    /// Most users; absent or null is unlimited.
    #[serde(default)]
    max_users: Option<LimitJson>,
}

/// Create a domain (super admin).
#[utoipa::path(
    post,
    path = "/domains",
    operation_id = "createDomain",
    request_body = NewDomain,
    responses(
        (status = 201, description = "Created", body = DomainJson),
        (status = 403, description = "Not a super admin", body = ErrorBody),
        (status = 409, description = "The domain (or an alias of that name) exists", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
async fn create_domain(
    State(state): State<AppState>,
    actor: Actor,
    Body(body): Body<NewDomain>,
) -> ApiResult<Response> {
    actor.require_super()?;
    let name = DomainName::parse(&body.name).map_err(AppError::from)?;
    let (bytes, messages, max_users) = (
        limit(body.quota_bytes.as_ref(), Unit::Bytes)?,
        limit(body.quota_messages.as_ref(), Unit::Count)?,
        limit(body.max_users.as_ref(), Unit::Count)?,
    );
    // A new domain starts unlimited: only limits actually given are set.
    let change = DomainChange {
        quota: QuotaChange {
            bytes: bytes.map(Some),
            messages: messages.map(Some),
        },
        max_users: max_users.map(Some),
        ..DomainChange::default()
    };
    let created = provision::create_domain(&state.roles, &actor, &name, &change).await?;
    Ok((StatusCode::CREATED, Json(DomainJson::from(&created))).into_response())
}

/// A domain.
#[utoipa::path(
    get,
    path = "/domains/{domain}",
    operation_id = "getDomain",
    params(("domain" = String, Path, description = "Domain name")),
    responses(
        (status = 200, description = "The domain", body = DomainJson),
        (status = 404, description = "No such domain in scope", body = ErrorBody),
    )
)]
async fn get_domain(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> ApiResult<Json<DomainJson>> {
    let name = actor.domain(&raw)?;
    let domain = provision::domain(&state.roles, &actor, &name).await?;
    Ok(Json(DomainJson::from(&domain)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DomainPatch {
    /// Byte quota; null is unlimited.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<LimitJson>)]
    quota_bytes: Option<Option<LimitJson>>,
    /// Message quota; null is unlimited.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<LimitJson>)]
    quota_messages: Option<Option<LimitJson>>,
    /// Most users; null is unlimited.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<LimitJson>)]
    max_users: Option<Option<LimitJson>>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<provision::json::LoginFormName>>, min_items = 1)]
    login_forms: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
    /// Migration mode: the old POP3 server (`pop3s://host[:port]`, or `pop3://host[:port]`
    /// with STLS); null ends it.
    #[serde(default, deserialize_with = "present")]
    migrate_from: Option<Option<String>>,
    /// Days a deleted message stays in the recycle bin (0: deletes are final).
    #[serde(default)]
    bin_days: Option<u32>,
    /// Whether the recycle bin counts against quota.
    #[serde(default)]
    bin_counts_quota: Option<bool>,
    /// Whether the domain's users may sign in to the self-service page (`/me`).
    #[serde(default)]
    self_service: Option<bool>,
    /// Whether only app passwords log in over POP3 and the MTA's auth service (the main
    /// password then signs in to the self-service page only).
    #[serde(default)]
    app_passwords_only: Option<bool>,
}

/// Change a domain's settings (super admin); absent fields are kept, null means unlimited.
#[utoipa::path(
    patch,
    path = "/domains/{domain}",
    operation_id = "updateDomain",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = DomainPatch,
    responses(
        (status = 200, description = "The domain after the change", body = DomainJson),
        (status = 403, description = "Not a super admin", body = ErrorBody),
        (status = 404, description = "No such domain in scope", body = ErrorBody),
        (status = 409, description = "Conflict", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
async fn patch_domain(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Body(patch): Body<DomainPatch>,
) -> ApiResult<Json<DomainJson>> {
    let name = actor.domain(&raw)?;
    actor.require_super()?;
    let change = DomainChange {
        quota: QuotaChange {
            bytes: limit_change(patch.quota_bytes.as_ref(), Unit::Bytes)?,
            messages: limit_change(patch.quota_messages.as_ref(), Unit::Count)?,
        },
        max_users: limit_change(patch.max_users.as_ref(), Unit::Count)?,
        login_forms: patch
            .login_forms
            .as_deref()
            .map(provision::login_forms)
            .transpose()?,
        allow_apop: None,
        enabled: patch.enabled,
        migrate_from: patch.migrate_from,
        bin_days: patch.bin_days,
        bin_counts_quota: patch.bin_counts_quota,
        self_service: patch.self_service,
        app_passwords_only: patch.app_passwords_only,
    };
    let after = provision::update_domain(&state.roles, &actor, &name, &change).await?;
    Ok(Json(DomainJson::from(&after)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Also delete the domain's users and their mail.
    #[serde(default)]
    force: bool,
}

/// Delete a domain (super admin).
#[utoipa::path(
    delete,
    path = "/domains/{domain}",
    operation_id = "deleteDomain",
    params(("domain" = String, Path, description = "Domain name"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not a super admin", body = ErrorBody),
        (status = 404, description = "No such domain in scope", body = ErrorBody),
        (status = 409, description = "The domain still has users and force is not set", body = ErrorBody),
    )
)]
async fn delete_domain(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Q(query): Q<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let name = actor.domain(&raw)?;
    provision::delete_domain(&state.roles, &actor, &name, query.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Policies.

/// A domain's mailbox policies: quota refusal, warning, retention (EXPIRE), LOGIN-DELAY.
#[utoipa::path(
    get,
    path = "/domains/{domain}/policies",
    operation_id = "getDomainPolicies",
    params(("domain" = String, Path, description = "Domain name")),
    responses(
        (status = 200, description = "The policies", body = PoliciesJson),
        (status = 404, description = "No such domain in scope", body = ErrorBody),
    )
)]
async fn get_policies(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> ApiResult<Json<PoliciesJson>> {
    let name = actor.domain(&raw)?;
    let policies = provision::policies(&state.roles, &actor, &name).await?;
    Ok(Json(PoliciesJson::from(&policies)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PolicyPatch {
    #[serde(default)]
    quota_tempfail: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u8>, minimum = 1, maximum = 100)]
    quota_warn_percent: Option<Option<u8>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 36500)]
    retention_days: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 31536000)]
    login_delay_secs: Option<Option<u32>>,
}

/// Change a domain's policies (super admin); absent fields are kept, null means none.
#[utoipa::path(
    patch,
    path = "/domains/{domain}/policies",
    operation_id = "updateDomainPolicies",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = PolicyPatch,
    responses(
        (status = 200, description = "The policies after the change", body = PoliciesJson),
        (status = 403, description = "Not a super admin", body = ErrorBody),
        (status = 404, description = "No such domain in scope", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
async fn patch_policies(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Body(patch): Body<PolicyPatch>,
) -> ApiResult<Json<PoliciesJson>> {
    let name = actor.domain(&raw)?;
    actor.require_super()?;
    let change = PolicyChange {
        quota_tempfail: patch.quota_tempfail,
        quota_warn_percent: patch.quota_warn_percent,
        retention_days: patch.retention_days,
        login_delay_secs: patch.login_delay_secs,
    };
    let after = provision::update_policies(&state.roles, &actor, &name, &change).await?;
    Ok(Json(PoliciesJson::from(&after)))
}

// ---------------------------------------------------------------------------------------------
// Users.

/// Users of the domain whose local part contains q.
#[utoipa::path(
    get,
    path = "/domains/{domain}/users",
    operation_id = "listUsers",
    params(("domain" = String, Path, description = "Domain name"), ListQuery),
    responses(
        (status = 200, description = "A page of users", body = UserList,
         headers(("Link" = String, description = "RFC 8288 links to the first, previous, next and last pages"))),
        (status = 404, description = "No such domain in scope", body = ErrorBody),
    )
)]
async fn list_users(
    State(state): State<AppState>,
    actor: Actor,
    OriginalUri(uri): OriginalUri,
    Path(raw): Path<String>,
    Q(query): Q<ListQuery>,
) -> ApiResult<Response> {
    let name = actor.domain(&raw)?;
    let size = query.page_size(state.config.page_size);
    let page = provision::users(&state.roles, &actor, &name, &query, size).await?;
    let paging = paging::Paging::new(query.page_within(page.total, size), page.total, size);
    let body = UserList {
        items: page.items.iter().map(UserJson::from).collect(),
        total: page.total,
    };
    Ok(paging::paged(&uri, paging, body))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    local: String,
    /// The mailbox password (see the 422 answer for the policy). Give this or `password_hash`.
    #[serde(default)]
    #[schema(format = Password)]
    password: Option<String>,
    /// The password hash another server stored, in Dovecot's `{SCHEME}…` form or as a bare
    /// crypt string (`$6$…`, `$2y$…`): the customer keeps their password. Give this or
    /// `password`.
    #[serde(default)]
    #[schema(format = Password)]
    password_hash: Option<String>,
    /// Byte quota; absent or null is unlimited.
    #[serde(default)]
    quota_bytes: Option<LimitJson>,
    /// Message quota; absent or null is unlimited.
    #[serde(default)]
    quota_messages: Option<LimitJson>,
}

/// Create a user.
#[utoipa::path(
    post,
    path = "/domains/{domain}/users",
    operation_id = "createUser",
    params(("domain" = String, Path, description = "Domain name")),
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = UserJson),
        (status = 404, description = "No such domain in scope", body = ErrorBody),
        (status = 409, description = "The user exists, or the domain is at its user limit", body = ErrorBody),
        (status = 422, description = "Invalid input (name, limit, a password shorter than the mailbox minimum)", body = ErrorBody),
    )
)]
async fn create_user(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Body(body): Body<NewUser>,
) -> ApiResult<Response> {
    let domain = actor.domain(&raw)?;
    let address = Address {
        local: LocalPart::parse(&body.local).map_err(AppError::from)?,
        domain,
    };
    // A new user starts unlimited: only limits actually given are set.
    let quota = QuotaChange {
        bytes: limit(body.quota_bytes.as_ref(), Unit::Bytes)?.map(Some),
        messages: limit(body.quota_messages.as_ref(), Unit::Count)?.map(Some),
    };
    let credential = credential(body.password, body.password_hash)?
        .ok_or_else(|| AppError::BadRequest("give password or password_hash".into()))?;
    let created = provision::create_user(&state.roles, &actor, &address, credential, quota).await?;
    Ok((StatusCode::CREATED, Json(UserJson::from(&created))).into_response())
}

/// A password or a hash, not both.
fn credential(
    password: Option<String>,
    hash: Option<String>,
) -> Result<Option<provision::Credential>, AppError> {
    match (password, hash) {
        (Some(_), Some(_)) => Err(AppError::BadRequest(
            "give password or password_hash, not both".into(),
        )),
        (Some(p), None) => Ok(Some(provision::Credential::Password(p))),
        (None, Some(h)) => Ok(Some(provision::Credential::Hash(h))),
        (None, None) => Ok(None),
    }
}

/// The user a URL names (the scope is checked by `provision`).
fn target(actor: &Actor, raw_domain: &str, raw_local: &str) -> Result<Address, AppError> {
    let domain = actor.domain(raw_domain)?;
    let local = LocalPart::parse(raw_local).map_err(|_| AppError::NotFound)?;
    Ok(Address { local, domain })
}

/// A user.
#[utoipa::path(
    get,
    path = "/domains/{domain}/users/{local}",
    operation_id = "getUser",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    responses(
        (status = 200, description = "The user", body = UserJson),
        (status = 404, description = "No such user in scope", body = ErrorBody),
    )
)]
async fn get_user(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> ApiResult<Json<UserJson>> {
    let address = target(&actor, &d, &l)?;
    let user = provision::user(&state.roles, &actor, &address).await?;
    Ok(Json(UserJson::from(&user)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    /// A new mailbox password.
    #[serde(default)]
    #[schema(format = Password)]
    password: Option<String>,
    /// Or the password hash another server stored (as in creating a user).
    #[serde(default)]
    #[schema(format = Password)]
    password_hash: Option<String>,
    /// Byte quota; null is unlimited.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<LimitJson>)]
    quota_bytes: Option<Option<LimitJson>>,
    /// Message quota; null is unlimited.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<LimitJson>)]
    quota_messages: Option<Option<LimitJson>>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// Change a user; absent fields are kept, a null quota means unlimited.
#[utoipa::path(
    patch,
    path = "/domains/{domain}/users/{local}",
    operation_id = "updateUser",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    request_body = UserPatch,
    responses(
        (status = 200, description = "The user after the change", body = UserJson),
        (status = 404, description = "No such user in scope", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
    )
)]
async fn patch_user(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Body(patch): Body<UserPatch>,
) -> ApiResult<Json<UserJson>> {
    let address = target(&actor, &d, &l)?;
    let change = UserChange {
        quota: QuotaChange {
            bytes: limit_change(patch.quota_bytes.as_ref(), Unit::Bytes)?,
            messages: limit_change(patch.quota_messages.as_ref(), Unit::Count)?,
        },
        password: credential(patch.password, patch.password_hash)?,
        enabled: patch.enabled,
    };
    let after = provision::update_user(&state.roles, &actor, &address, change).await?;
    Ok(Json(UserJson::from(&after)))
}

/// Delete a user and all their mail.
#[utoipa::path(
    delete,
    path = "/domains/{domain}/users/{local}",
    operation_id = "deleteUser",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("local" = String, Path, description = "Local part of the address (before the @)"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such user in scope", body = ErrorBody),
    )
)]
async fn delete_user(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let address = target(&actor, &d, &l)?;
    provision::delete_user(&state.roles, &actor, &address).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Importing users.

/// The largest CSV an import takes (about 100,000 accounts with crypt hashes), in the API and
/// the admin UI; other routes keep their limits.
pub(crate) const IMPORT_LIMIT: usize = 16 * 1024 * 1024;

/// `?dry_run=…&update=…` of an import.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    /// Check every row and answer what would happen; change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Change the accounts that exist already; without it they are left alone ("unchanged").
    #[serde(default)]
    update: bool,
}

/// The counts of an import; lines that could not be read count as failed.
#[derive(Serialize, ToSchema)]
struct ImportSummary {
    added: u64,
    updated: u64,
    unchanged: u64,
    failed: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ImportOutcome {
    Added,
    Updated,
    Unchanged,
    Failed,
}

/// What happened to one row (on a dry run: what would happen).
#[derive(Serialize, ToSchema)]
struct ImportRow {
    /// The row's line in the CSV (1-based, the header is line 1).
    line: u64,
    address: String,
    outcome: ImportOutcome,
    /// Why the row failed; only on failed rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A line of the CSV that could not be read.
#[derive(Serialize, ToSchema)]
struct ImportLineError {
    line: u64,
    message: String,
}

/// The outcome of an import: every row that was read, and every line that was not.
#[derive(Serialize, ToSchema)]
struct ImportReport {
    summary: ImportSummary,
    rows: Vec<ImportRow>,
    errors: Vec<ImportLineError>,
}

/// Create (and with `update`, change) many users from a CSV with the header
/// `address,password_hash,password,quota_bytes,quota_messages,enabled`; every address must be
/// in the domain. Each row is applied on its own, audited as a single change is: one that fails
/// does not stop the others. `password_hash` takes the hash another server stored (Dovecot's
/// `{SCHEME}…` form or a bare crypt string), so customers keep their passwords.
#[utoipa::path(
    post,
    path = "/domains/{domain}/users/import",
    operation_id = "importUsers",
    params(("domain" = String, Path, description = "Domain name"), ImportQuery),
    request_body(
        content = String,
        content_type = "text/csv",
        description = "The accounts, UTF-8, one per line after the header (at most 16 MiB)"
    ),
    responses(
        (status = 200, description = "Every row's outcome and every line that could not be read", body = ImportReport),
        (status = 404, description = "No such domain in scope", body = ErrorBody),
        (status = 413, description = "The CSV is larger than 16 MiB", body = ErrorBody),
        (status = 422, description = "Not a UTF-8 text/csv body", body = ErrorBody),
    )
)]
async fn import_users(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Q(query): Q<ImportQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let domain = provision::domain(&state.roles, &actor, &actor.domain(&raw)?)
        .await?
        .name;
    let body = match body {
        Ok(body) => body,
        // Too large (413) or cut off: the API's JSON error with axum's status.
        Err(e) => {
            let error = serde_json::json!({ "error": e.body_text() });
            return Ok((e.status(), Json(error)).into_response());
        }
    };
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/csv"));
    if !csv {
        return Err(
            AppError::BadRequest("send the accounts as Content-Type: text/csv".into()).into(),
        );
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| AppError::BadRequest("the CSV is not UTF-8".into()))?;
    let (rows, errors) = accounts::parse_csv(text);
    let options = accounts::Options {
        dry_run: query.dry_run,
        update: query.update,
    };
    let results = accounts::apply_in_domain(&state.roles, &actor, &domain, rows, options).await;
    let summary = Summary::of(&results, errors.len());
    let report = ImportReport {
        summary: ImportSummary {
            added: summary.added,
            updated: summary.updated,
            unchanged: summary.unchanged,
            failed: summary.failed,
        },
        rows: results
            .into_iter()
            .map(|r| {
                let (outcome, error) = match r.outcome {
                    Outcome::Added => (ImportOutcome::Added, None),
                    Outcome::Updated => (ImportOutcome::Updated, None),
                    Outcome::Unchanged => (ImportOutcome::Unchanged, None),
                    Outcome::Failed(e) => (ImportOutcome::Failed, Some(e)),
                };
                ImportRow {
                    line: r.line as u64,
                    address: r.address.to_string(),
                    outcome,
                    error,
                }
            })
            .collect(),
        errors: errors
            .into_iter()
            .map(|e| ImportLineError {
                line: e.line as u64,
                message: e.message,
            })
            .collect(),
    };
    Ok(Json(report).into_response())
}

// ---------------------------------------------------------------------------------------------
// Sessions.

/// Maildrops locked by live POP3 sessions, in scope.
#[utoipa::path(
    get,
    path = "/sessions",
    operation_id = "listSessions",
    params(SessionQuery),
    responses((status = 200, description = "A page of live sessions", body = Vec<SessionJson>,
               headers(("Link" = String, description = "RFC 8288 links to the first, previous, next and last pages"))))
)]
async fn list_sessions(
    State(state): State<AppState>,
    actor: Actor,
    OriginalUri(uri): OriginalUri,
    Q(filter): Q<SessionQuery>,
) -> ApiResult<Response> {
    let sessions: Vec<SessionJson> = provision::live_sessions(&state.roles, &actor)
        .await?
        .iter()
        .filter(|s| filter.matches(s))
        .map(SessionJson::from)
        .collect();
    let list = filter.list();
    let size = list.page_size(state.config.page_size);
    let total = sessions.len() as u64;
    let paging = paging::Paging::new(list.page_within(total, size), total, size);
    let skip = usize::try_from((paging.page - 1) * size).unwrap_or(usize::MAX);
    let take = usize::try_from(size).unwrap_or(usize::MAX);
    let page: Vec<SessionJson> = sessions.into_iter().skip(skip).take(take).collect();
    Ok(paging::paged(&uri, paging, page))
}

/// Break the maildrop lock; the session ends at its next lease renewal.
#[utoipa::path(
    delete,
    path = "/sessions/{address}",
    operation_id = "endSession",
    params(("address" = String, Path, description = "Mailbox address user@domain")),
    responses(
        (status = 204, description = "Lock broken"),
        (status = 404, description = "No locked maildrop of that address in scope", body = ErrorBody),
    )
)]
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
    if !state.roles.admin.break_lock(&address).await? {
        return Err(AppError::NotFound.into());
    }
    let object = address.to_string();
    actor
        .audit(
            &state.roles,
            Audit::new("session.end", &object, Some(&address.domain)),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
#[cfg(test)]
mod tests {
    use mailstore::{
        Address, DomainDetail, DomainName, DomainPolicies, LiveSession, LoginForms, Quota, Usage,
        UserDetail,
    };
    use serde_json::Value;

    use crate::provision::{DomainJson, PoliciesJson, SessionJson, UserJson};

    /// The keys `schema` lists as required, and the keys `sent` has.
    fn keys(schema: &Value, sent: &Value) -> (Vec<String>, Vec<String>) {
        let mut required: Vec<String> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .map(|k| k.as_str().expect("key").to_string())
            .collect();
        let mut sent: Vec<String> = sent.as_object().expect("object").keys().cloned().collect();
        required.sort();
        sent.sort();
        (required, sent)
    }

    /// A client generated from the document may rely on every field a response sends, null or
    /// not: each schema requires exactly the fields serialized.
    #[test]
    fn response_schemas_require_exactly_the_fields_sent() {
        let (_, doc) = super::routes();
        let doc = serde_json::to_value(&doc).expect("document");
        let schemas = &doc["components"]["schemas"];
        let name = DomainName::parse("example.com").expect("name");
        let domain = DomainDetail {
            name: name.clone(),
            quota: Quota::default(),
            usage: Usage::default(),
            users: 0,
            max_users: None,
            login_forms: LoginForms::parse("all").expect("forms"),
            allow_apop: false,
            enabled: true,
            aliases: vec![],
            migrate_from: None,
            migrated_users: 0,
            bin: Default::default(),
            self_service: false,
            app_passwords_only: false,
        };
        let address = Address::parse("john@example.com").expect("address");
        let user = UserDetail {
            address: address.clone(),
            quota: Quota::default(),
            usage: Usage::default(),
            enabled: true,
            created_at: 0,
            password_scheme: None,
        };
        let session = LiveSession {
            address,
            node: "a".into(),
            since: 0,
            client: None,
            tls: None,
        };
        // A row that did not fail: `error` is sent only on failed rows.
        let import = super::ImportReport {
            summary: super::ImportSummary {
                added: 1,
                updated: 0,
                unchanged: 0,
                failed: 1,
            },
            rows: vec![super::ImportRow {
                line: 2,
                address: "john@example.com".into(),
                outcome: super::ImportOutcome::Added,
                error: None,
            }],
            errors: vec![super::ImportLineError {
                line: 3,
                message: "no address".into(),
            }],
        };
        let value = |v: Result<Value, serde_json::Error>| v.expect("serializes");
        for (schema, sent) in [
            (
                "Domain",
                value(serde_json::to_value(DomainJson::from(&domain))),
            ),
            ("User", value(serde_json::to_value(UserJson::from(&user)))),
            (
                "DomainPolicies",
                value(serde_json::to_value(PoliciesJson::from(
                    &DomainPolicies::default(),
                ))),
            ),
            (
                "Session",
                value(serde_json::to_value(SessionJson::from(&session))),
            ),
            ("ImportReport", value(serde_json::to_value(&import))),
            (
                "ImportSummary",
                value(serde_json::to_value(&import.summary)),
            ),
            ("ImportRow", value(serde_json::to_value(&import.rows[0]))),
            (
                "ImportLineError",
                value(serde_json::to_value(&import.errors[0])),
            ),
        ] {
            let (required, sent) = keys(&schemas[schema], &sent);
            assert_eq!(required, sent, "{schema}");
        }
    }
}

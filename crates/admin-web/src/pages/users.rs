//! A domain's users: the list with bulk actions, creation, quota, password, enabling and
//! deletion. The store operations behind them are shared with the API so both audit alike.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::Form;
use mailstore::{Address, DomainName, LocalPart, QuotaChange, StoreError, UserDetail};
use serde::Deserialize;

use crate::api::user_json;
use crate::auth::{Actor, Audit, Chrome, FieldErrors};
use crate::error::AppError;
use crate::pages::domains::{
    BYTES, COUNT, ConfirmPage, UsageView, check, conflict_to_field, detail, parse_quota,
    query_value, segment, show_quota,
};
use crate::pages::{ListQuery, Pager, human_time};
use crate::password::PasswordFor;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains/{domain}/users", get(list).post(create))
        .route("/domains/{domain}/users/new", get(new_form))
        .route("/domains/{domain}/users/bulk", post(bulk))
        .route(
            "/domains/{domain}/users/{local}",
            get(show).post(update_quota),
        )
        .route("/domains/{domain}/users/{local}/password", post(password))
        .route("/domains/{domain}/users/{local}/enabled", post(enabled))
        .route(
            "/domains/{domain}/users/{local}/delete",
            get(confirm_delete).post(delete),
        )
}

// ---------------------------------------------------------------------------------------------
// Helpers shared with the API.

/// The policy for a mailbox's new password, as a form error.
pub(crate) fn password_problem(password: &str) -> Result<(), String> {
    crate::password::password_problem(password, PasswordFor::Mailbox).map_err(|e| e.to_string())
}

/// The argon2 hash and the SCRAM verifier of a password. Both take tens of milliseconds of
/// CPU, so they run on the blocking pool, not the reactor.
async fn hash_password(password: String) -> Result<(String, String), AppError> {
    tokio::task::spawn_blocking(move || {
        let v = tenancy::ScramVerifier::derive(password.as_bytes()).to_string();
        tenancy::hash_password(password.as_bytes()).map(|h| (h, v))
    })
    .await
    .map_err(|e| AppError::Internal(format!("password hashing did not finish: {e}")))?
    .map_err(|e| AppError::Internal(e.to_string()))
}

/// The user `local` of `domain` (already checked against the actor's scope).
pub(crate) fn address(domain: &DomainName, local: &str) -> Result<Address, AppError> {
    let local = LocalPart::parse(local).map_err(|_| AppError::NotFound)?;
    Ok(Address {
        local,
        domain: domain.clone(),
    })
}

pub(crate) async fn user(state: &AppState, address: &Address) -> Result<UserDetail, AppError> {
    state
        .store
        .user_detail(address)
        .await?
        .ok_or(AppError::NotFound)
}

async fn audit_user(
    state: &AppState,
    actor: &Actor,
    action: &str,
    address: &Address,
    before: Option<&UserDetail>,
    after: Option<&UserDetail>,
) {
    let object = address.to_string();
    let mut record = Audit::new(action, &object, Some(&address.domain));
    record.before = before.map(user_json);
    record.after = after.map(user_json);
    actor.audit(state, record).await;
}

/// Creates a user (checked: password length, the domain's user limit) and audits it.
pub(crate) async fn create_user(
    state: &AppState,
    actor: &Actor,
    address: &Address,
    password: String,
    quota: QuotaChange,
) -> Result<UserDetail, AppError> {
    password_problem(&password).map_err(AppError::BadRequest)?;
    let domain = detail(state, &address.domain).await?;
    // The store enforces the limit in its insert; checking first spares a full domain the
    // cost of an argon2 hash.
    if let Some(max) = domain.max_users
        && domain.users >= max
    {
        return Err(StoreError::Conflict(format!(
            "{} already has its maximum of {max} user(s)",
            domain.name
        ))
        .into());
    }
    let (hash, verifier) = hash_password(password).await?;
    state
        .store
        .add_user(address, &hash, Some(&verifier))
        .await?;
    if quota != QuotaChange::default() {
        state.store.set_user_quota(address, quota).await?;
    }
    let after = user(state, address).await?;
    audit_user(state, actor, "user.create", address, None, Some(&after)).await;
    Ok(after)
}

pub(crate) async fn set_quota(
    state: &AppState,
    actor: &Actor,
    before: &UserDetail,
    quota: QuotaChange,
) -> Result<UserDetail, AppError> {
    let address = &before.address;
    state.store.set_user_quota(address, quota).await?;
    let after = user(state, address).await?;
    audit_user(
        state,
        actor,
        "user.update",
        address,
        Some(before),
        Some(&after),
    )
    .await;
    Ok(after)
}

pub(crate) async fn set_password(
    state: &AppState,
    actor: &Actor,
    before: &UserDetail,
    password: String,
) -> Result<(), AppError> {
    password_problem(&password).map_err(AppError::BadRequest)?;
    let (hash, verifier) = hash_password(password).await?;
    let address = &before.address;
    state
        .store
        .set_password(address, &hash, Some(&verifier))
        .await?;
    audit_user(state, actor, "user.password", address, Some(before), None).await;
    Ok(())
}

pub(crate) async fn set_enabled(
    state: &AppState,
    actor: &Actor,
    before: &UserDetail,
    enabled: bool,
) -> Result<UserDetail, AppError> {
    let address = &before.address;
    state.store.set_user_enabled(address, enabled).await?;
    let after = user(state, address).await?;
    let action = if enabled {
        "user.enable"
    } else {
        "user.disable"
    };
    audit_user(state, actor, action, address, Some(before), Some(&after)).await;
    Ok(after)
}

pub(crate) async fn delete_user(
    state: &AppState,
    actor: &Actor,
    before: &UserDetail,
) -> Result<(), AppError> {
    let address = &before.address;
    state.store.remove_user(address).await?;
    audit_user(state, actor, "user.delete", address, Some(before), None).await;
    Ok(())
}

/// The quota fields of a form; both are always sent, so both are set.
fn quota_change(errors: &mut FieldErrors, quota_bytes: &str, quota_messages: &str) -> QuotaChange {
    let bytes = check(errors, "quota_bytes", parse_quota(quota_bytes, BYTES));
    let messages = check(errors, "quota_messages", parse_quota(quota_messages, COUNT));
    QuotaChange {
        bytes: Some(bytes),
        messages: Some(messages),
    }
}

fn user_href(address: &Address) -> String {
    format!(
        "/domains/{}/users/{}",
        segment(address.domain.as_str()),
        segment(address.local.as_str())
    )
}

// ---------------------------------------------------------------------------------------------
// The list and bulk actions.

struct UserRow {
    address: String,
    local: String,
    href: String,
    usage: UsageView,
    quota_messages: String,
    enabled: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "users.html")]
struct ListPage {
    chrome: Chrome,
    domain: String,
    href: String,
    rows: Vec<UserRow>,
    pager: Pager,
    q_enc: String,
}

async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, AppError> {
    let domain = actor.domain(&raw)?;
    let domain = detail(&state, &domain).await?.name;
    let size = state.config.page_size;
    let page = state
        .store
        .user_page(&domain, query.q.trim(), query.offset(size), size)
        .await?;
    let rows = page
        .items
        .iter()
        .map(|u| UserRow {
            address: u.address.to_string(),
            local: u.address.local.to_string(),
            href: user_href(&u.address),
            usage: UsageView::bytes(u.usage.bytes, u.quota.bytes),
            quota_messages: u.quota.messages.map_or_else(
                || format!("{} / unlimited", u.usage.messages),
                |m| format!("{} / {m}", u.usage.messages),
            ),
            enabled: u.enabled,
        })
        .collect();
    Ok(ListPage {
        chrome: Chrome::from(&actor),
        href: segment(domain.as_str()),
        domain: domain.to_string(),
        rows,
        pager: Pager::new(&query, page.total, size),
        q_enc: query_value(&query.q),
    }
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
struct BulkForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    selected: Vec<String>,
}

async fn bulk(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Form(form): Form<BulkForm>,
) -> Result<Response, AppError> {
    let domain = actor.domain(&raw)?;
    if !matches!(form.action.as_str(), "enable" | "disable" | "delete") {
        return Err(AppError::BadRequest(
            "choose enable, disable or delete".into(),
        ));
    }
    for local in &form.selected {
        let address = address(&domain, local)?;
        // Gone already (a second tab, a double submit): nothing left to do for it.
        let Some(before) = state.store.user_detail(&address).await? else {
            continue;
        };
        match form.action.as_str() {
            "enable" => set_enabled(&state, &actor, &before, true).await.map(drop)?,
            "disable" => set_enabled(&state, &actor, &before, false)
                .await
                .map(drop)?,
            _ => delete_user(&state, &actor, &before).await?,
        }
    }
    Ok(Redirect::to(&format!("/domains/{}/users", segment(domain.as_str()))).into_response())
}

// ---------------------------------------------------------------------------------------------
// Creation.

#[derive(Debug, Default, Deserialize)]
struct NewForm {
    #[serde(default)]
    local: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    quota_bytes: String,
    #[serde(default)]
    quota_messages: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "users_new.html")]
struct NewPage {
    chrome: Chrome,
    domain: String,
    href: String,
    form: NewForm,
    errors: FieldErrors,
}

async fn new_form(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let domain = detail(&state, &actor.domain(&raw)?).await?;
    Ok(NewPage {
        chrome: Chrome::from(&actor),
        href: segment(domain.name.as_str()),
        domain: domain.name.to_string(),
        form: NewForm::default(),
        errors: FieldErrors::default(),
    }
    .into_response())
}

impl NewForm {
    /// The address and the quota to create; the password is checked here, hashed later.
    fn validate(&self, domain: &DomainName) -> Result<(Address, QuotaChange), FieldErrors> {
        let mut errors = FieldErrors::default();
        let local = LocalPart::parse(&self.local)
            .map(Some)
            .map_err(|e| e.to_string());
        let local = check(&mut errors, "local", local);
        check(&mut errors, "password", password_problem(&self.password));
        let quota = quota_change(&mut errors, &self.quota_bytes, &self.quota_messages);
        // A new user starts unlimited: only limits actually typed are set.
        let quota = QuotaChange {
            bytes: quota.bytes.filter(Option::is_some),
            messages: quota.messages.filter(Option::is_some),
        };
        match local {
            Some(local) if errors.is_empty() => Ok((
                Address {
                    local,
                    domain: domain.clone(),
                },
                quota,
            )),
            _ => Err(errors),
        }
    }
}

async fn create(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Form(mut form): Form<NewForm>,
) -> Result<Response, AppError> {
    let domain = detail(&state, &actor.domain(&raw)?).await?.name;
    let errors = match form.validate(&domain) {
        Ok((address, quota)) => {
            let password = std::mem::take(&mut form.password);
            match create_user(&state, &actor, &address, password, quota).await {
                Ok(_) => return Ok(Redirect::to(&user_href(&address)).into_response()),
                Err(e) => conflict_to_field(e, "local")?,
            }
        }
        Err(errors) => errors,
    };
    // The password is never sent back to the browser.
    form.password.clear();
    let page = NewPage {
        chrome: Chrome::from(&actor),
        href: segment(domain.as_str()),
        domain: domain.to_string(),
        form,
        errors,
    };
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

// ---------------------------------------------------------------------------------------------
// One user.

#[derive(Template, WebTemplate)]
#[template(path = "users_edit.html")]
struct EditPage {
    chrome: Chrome,
    user: UserDetail,
    href: String,
    domain_href: String,
    usage: UsageView,
    created: String,
    quota_bytes: String,
    quota_messages: String,
    errors: FieldErrors,
}

impl EditPage {
    fn new(actor: &Actor, user: UserDetail) -> Self {
        Self {
            chrome: Chrome::from(actor),
            href: user_href(&user.address),
            domain_href: segment(user.address.domain.as_str()),
            usage: UsageView::bytes(user.usage.bytes, user.quota.bytes),
            created: human_time(user.created_at),
            quota_bytes: show_quota(user.quota.bytes, BYTES),
            quota_messages: show_quota(user.quota.messages, COUNT),
            user,
            errors: FieldErrors::default(),
        }
    }

    fn invalid(mut self, errors: FieldErrors) -> Response {
        self.errors = errors;
        (StatusCode::UNPROCESSABLE_ENTITY, self).into_response()
    }
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

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let user = target(&state, &actor, &d, &l).await?;
    Ok(EditPage::new(&actor, user).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct QuotaForm {
    #[serde(default)]
    quota_bytes: String,
    #[serde(default)]
    quota_messages: String,
}

async fn update_quota(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Form(form): Form<QuotaForm>,
) -> Result<Response, AppError> {
    let before = target(&state, &actor, &d, &l).await?;
    let mut errors = FieldErrors::default();
    let quota = quota_change(&mut errors, &form.quota_bytes, &form.quota_messages);
    if !errors.is_empty() {
        let mut page = EditPage::new(&actor, before);
        page.quota_bytes = form.quota_bytes;
        page.quota_messages = form.quota_messages;
        return Ok(page.invalid(errors));
    }
    let after = set_quota(&state, &actor, &before, quota).await?;
    Ok(Redirect::to(&user_href(&after.address)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct PasswordForm {
    #[serde(default)]
    password: String,
}

async fn password(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    let before = target(&state, &actor, &d, &l).await?;
    if let Err(e) = password_problem(&form.password) {
        let mut errors = FieldErrors::default();
        errors.add("password", e);
        return Ok(EditPage::new(&actor, before).invalid(errors));
    }
    set_password(&state, &actor, &before, form.password).await?;
    Ok(Redirect::to(&user_href(&before.address)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct EnabledForm {
    #[serde(default)]
    enabled: String,
}

async fn enabled(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
    Form(form): Form<EnabledForm>,
) -> Result<Response, AppError> {
    let before = target(&state, &actor, &d, &l).await?;
    let enabled = match form.enabled.as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(AppError::BadRequest("enabled must be true or false".into())),
    };
    set_enabled(&state, &actor, &before, enabled).await?;
    Ok(Redirect::to(&user_href(&before.address)).into_response())
}

fn confirm_page(actor: &Actor, user: &UserDetail) -> ConfirmPage {
    let href = user_href(&user.address);
    ConfirmPage {
        chrome: Chrome::from(actor),
        title: format!("Delete user {}", user.address),
        message: format!(
            "Delete the mailbox {} and all its mail ({} message(s))?",
            user.address, user.usage.messages
        ),
        action: format!("{href}/delete"),
        cancel: href,
        offer_force: false,
        errors: FieldErrors::default(),
    }
}

async fn confirm_delete(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let user = target(&state, &actor, &d, &l).await?;
    Ok(confirm_page(&actor, &user).into_response())
}

async fn delete(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let before = target(&state, &actor, &d, &l).await?;
    delete_user(&state, &actor, &before).await?;
    Ok(Redirect::to(&format!(
        "/domains/{}/users",
        segment(before.address.domain.as_str())
    ))
    .into_response())
}

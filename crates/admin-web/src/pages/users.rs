//! A domain's users: the list with bulk actions, creation, quota, password, enabling and
//! deletion, over the operations of `provision`.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::Form;
use mailstore::{Address, DomainName, LocalPart, QuotaChange, StoreError, UserDetail};
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors};
use crate::error::AppError;
use crate::flash;
use crate::pages::activity::ActivityView;
use crate::pages::domains::{ConfirmPage, UsageView, check, conflict_to_field, limit, segment};
use crate::pages::{ListQuery, Pager, human_bytes, human_time};
use crate::password::PasswordFor;
use crate::provision::activity;
use crate::provision::{self, Actor, Unit, UserChange, show_limit};
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
// Helpers.

/// The policy for a mailbox's new password, as a form error.
fn password_problem(password: &str) -> Result<(), String> {
    crate::password::password_problem(password, PasswordFor::Mailbox).map_err(|e| e.to_string())
}

/// The user `local` of `domain` (already checked against the actor's scope).
fn address(domain: &DomainName, local: &str) -> Result<Address, AppError> {
    let local = LocalPart::parse(local).map_err(|_| AppError::NotFound)?;
    Ok(Address {
        local,
        domain: domain.clone(),
    })
}

/// The quota fields of a form; both are always sent, so both are set.
fn quota_change(errors: &mut FieldErrors, quota_bytes: &str, quota_messages: &str) -> QuotaChange {
    let bytes = check(errors, "quota_bytes", limit(quota_bytes, Unit::Bytes));
    let messages = check(errors, "quota_messages", limit(quota_messages, Unit::Count));
    QuotaChange {
        bytes: Some(bytes),
        messages: Some(messages),
    }
}

/// A quota the store refused as larger than the domain's, under the field (or fields) it names.
fn outside_domain(errors: &mut FieldErrors, bytes: bool, messages: bool) {
    if bytes {
        errors.add("quota_bytes", "Larger than the domain's storage quota");
    }
    if messages {
        errors.add("quota_messages", "Larger than the domain's message quota");
    }
}

/// A quota for a confirmation: "500.0 MiB", "500.0 MiB and 10000 messages", "unlimited".
fn quota_words(quota: &mailstore::Quota) -> String {
    let bytes = quota.bytes.map_or_else(|| "unlimited".into(), human_bytes);
    match quota.messages {
        Some(m) => format!("{bytes} and {m} messages"),
        None => bytes,
    }
}

/// Why a new user was refused, under the field concerned.
fn new_user_errors(e: provision::Error) -> Result<FieldErrors, AppError> {
    match e {
        provision::Error::Store(StoreError::QuotaOutsideDomain {
            bytes, messages, ..
        }) => {
            let mut errors = FieldErrors::default();
            outside_domain(&mut errors, bytes, messages);
            Ok(errors)
        }
        other => conflict_to_field(other, "local"),
    }
}

/// The user page of `address`.
pub(crate) fn user_href(address: &Address) -> String {
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
}

async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, AppError> {
    let domain = actor.domain(&raw)?;
    let size = query.page_size(state.config.page_size);
    let page = provision::users(&state.roles, &actor, &domain, &query, size).await?;
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
    }
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
struct BulkForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    selected: Vec<String>,
    /// Set by the confirmation page: deleting is asked about first.
    #[serde(default)]
    confirmed: Option<String>,
}

/// "Delete these users?": the selection, listed, and a form that posts it again confirmed.
#[derive(Template, WebTemplate)]
#[template(path = "users_bulk_confirm.html")]
struct BulkConfirmPage {
    chrome: Chrome,
    href: String,
    addresses: Vec<String>,
    selected: Vec<String>,
}

/// "1 user" / "3 users".
fn users_count(n: usize) -> String {
    if n == 1 {
        "1 user".into()
    } else {
        format!("{n} users")
    }
}

async fn bulk(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Form(form): Form<BulkForm>,
) -> Result<Response, AppError> {
    let domain = actor.domain(&raw)?;
    let list = format!("/domains/{}/users", segment(domain.as_str()));
    if !matches!(form.action.as_str(), "enable" | "disable" | "delete") {
        return Err(AppError::BadRequest(
            "choose enable, disable or delete".into(),
        ));
    }
    let mut addresses = Vec::with_capacity(form.selected.len());
    for local in &form.selected {
        let a = address(&domain, local)?;
        if !addresses.contains(&a) {
            addresses.push(a);
        }
    }
    if addresses.is_empty() {
        return Ok(flash::failed(&list, "No users selected"));
    }
    if form.action == "delete" && form.confirmed.as_deref() != Some("yes") {
        let page = BulkConfirmPage {
            chrome: Chrome::from(&actor),
            href: segment(domain.as_str()),
            addresses: addresses.iter().map(ToString::to_string).collect(),
            selected: addresses.iter().map(|a| a.local.to_string()).collect(),
        };
        return Ok(page.into_response());
    }
    let mut done_count = 0;
    for address in &addresses {
        let done = match form.action.as_str() {
            "delete" => provision::delete_user(&state.roles, &actor, address).await,
            action => {
                let change = UserChange {
                    enabled: Some(action == "enable"),
                    ..UserChange::default()
                };
                provision::update_user(&state.roles, &actor, address, change)
                    .await
                    .map(drop)
            }
        };
        match done {
            Ok(()) => done_count += 1,
            // Gone already (a second tab, a double submit): nothing left to do for it.
            Err(
                provision::Error::NotFound(_) | provision::Error::Store(StoreError::NotFound(_)),
            ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let verb = match form.action.as_str() {
        "delete" => "deleted",
        "enable" => "enabled",
        _ => "disabled",
    };
    let gone = addresses.len() - done_count;
    let message = if gone == 0 {
        format!("{} {verb}", users_count(done_count))
    } else {
        format!(
            "{} {verb}; {} no longer there",
            users_count(done_count),
            users_count(gone)
        )
    };
    Ok(flash::done(&list, message))
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
    let domain = provision::domain(&state.roles, &actor, &actor.domain(&raw)?).await?;
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
    let domain = provision::domain(&state.roles, &actor, &actor.domain(&raw)?)
        .await?
        .name;
    let errors = match form.validate(&domain) {
        Ok((address, quota)) => {
            let password = std::mem::take(&mut form.password);
            let password = provision::Credential::Password(password);
            match provision::create_user(&state.roles, &actor, &address, password, quota).await {
                Ok(_) => {
                    return Ok(flash::done(
                        &user_href(&address),
                        format!("User {address} created"),
                    ));
                }
                Err(e) => new_user_errors(e)?,
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
    /// What the customer did; read by `show` only (a form shown again with its errors leaves
    /// it out).
    activity: Option<ActivityView>,
    /// Re-download alarms, newest first; read by `show` only.
    alarms: Vec<crate::pages::alarms::AlarmView>,
    /// The user's protocol trace, if any; read by `show` only.
    trace: crate::pages::traces::TraceSummary,
    /// How many messages the user's recycle bin holds; read by `show` only.
    bin: Option<u64>,
    /// The user's app passwords; read by `show` only.
    app_passwords: Option<Vec<crate::pages::app_passwords::AppPasswordRow>>,
}

impl EditPage {
    fn new(actor: &Actor, user: UserDetail) -> Self {
        Self {
            chrome: Chrome::from(actor),
            href: user_href(&user.address),
            domain_href: segment(user.address.domain.as_str()),
            usage: UsageView::bytes(user.usage.bytes, user.quota.bytes),
            created: human_time(user.created_at),
            quota_bytes: show_limit(user.quota.bytes, Unit::Bytes),
            quota_messages: show_limit(user.quota.messages, Unit::Count),
            user,
            errors: FieldErrors::default(),
            activity: None,
            alarms: Vec::new(),
            trace: Default::default(),
            bin: None,
            app_passwords: None,
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
    Ok(provision::user(&state.roles, actor, &address(&domain, raw_local)?).await?)
}

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path((d, l)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let user = target(&state, &actor, &d, &l).await?;
    let activity = activity::user_activity(&state.roles, &actor, &user.address).await?;
    let mut page = EditPage::new(&actor, user);
    page.activity = Some(ActivityView::from(&activity));
    let alarms = provision::alarms::user_alarms(&state.roles, &actor, &page.user.address).await?;
    page.alarms = alarms.iter().map(Into::into).collect();
    page.trace = crate::pages::traces::summary(&state, &actor, &page.user.address).await?;
    page.bin = Some(crate::pages::bin::count(&state, &actor, &page.user.address).await?);
    page.app_passwords =
        Some(crate::pages::app_passwords::rows(&state, &actor, &page.user.address).await?);
    Ok(page.into_response())
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
    if errors.is_empty() {
        let change = UserChange {
            quota,
            ..UserChange::default()
        };
        match provision::update_user(&state.roles, &actor, &before.address, change).await {
            Ok(after) => {
                return Ok(flash::done(
                    &user_href(&after.address),
                    format!(
                        "Quota of {} set to {}",
                        after.address,
                        quota_words(&after.quota)
                    ),
                ));
            }
            Err(provision::Error::Store(StoreError::QuotaOutsideDomain {
                bytes,
                messages,
                ..
            })) => outside_domain(&mut errors, bytes, messages),
            Err(e) => return Err(e.into()),
        }
    }
    // The form again, as typed, with the errors under their fields.
    let mut page = EditPage::new(&actor, before);
    page.quota_bytes = form.quota_bytes;
    page.quota_messages = form.quota_messages;
    Ok(page.invalid(errors))
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
    let change = UserChange {
        password: Some(provision::Credential::Password(form.password)),
        ..UserChange::default()
    };
    provision::update_user(&state.roles, &actor, &before.address, change).await?;
    Ok(flash::done(
        &user_href(&before.address),
        format!("Password of {} changed", before.address),
    ))
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
    let change = UserChange {
        enabled: Some(enabled),
        ..UserChange::default()
    };
    provision::update_user(&state.roles, &actor, &before.address, change).await?;
    let what = if enabled {
        "enabled"
    } else {
        "disabled: cannot log in"
    };
    Ok(flash::done(
        &user_href(&before.address),
        format!("{} {what}", before.address),
    ))
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
    provision::delete_user(&state.roles, &actor, &before.address).await?;
    Ok(flash::done(
        &format!("/domains/{}/users", segment(before.address.domain.as_str())),
        format!("User {} deleted", before.address),
    ))
}

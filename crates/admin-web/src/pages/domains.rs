//! Domains: the list, creation, the settings page with its aliases, and deletion, over the
//! operations of `provision`.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::Form;
use mailstore::{DomainDetail, DomainName, LoginForm, QuotaChange, StoreError};
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors};
use crate::error::AppError;
use crate::flash;
use crate::pages::{ListQuery, Pager, human_bytes};
use crate::provision::{self, Actor, DomainChange, Unit, show_limit};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains", get(list).post(create))
        .route("/domains/new", get(new_form))
        .route("/domains/{domain}", get(show).post(update))
        .route("/domains/{domain}/aliases", post(add_alias))
        .route(
            "/domains/{domain}/aliases/{alias}/delete",
            post(remove_alias),
        )
        .route("/domains/{domain}/delete", get(confirm_delete).post(delete))
}

// ---------------------------------------------------------------------------------------------
// Helpers shared with the user pages and the API.

/// A limit field of a form, parsed by the one limit parser.
pub(crate) fn limit(raw: &str, unit: Unit) -> Result<Option<u64>, String> {
    provision::parse_limit(raw, unit).map_err(|e| e.to_string())
}

/// A value for a path segment. Names that would hit a fixed route (`new`, `bulk`) get their
/// first byte percent-encoded: the router matches the raw path, the extractor decodes it, so
/// a user called `new` still reaches their own page.
pub(crate) fn segment(raw: &str) -> String {
    let enc: String = form_urlencoded::byte_serialize(raw.as_bytes()).collect();
    if matches!(enc.as_str(), "new" | "bulk") {
        format!("%{:02X}{}", enc.as_bytes()[0], &enc[1..])
    } else {
        enc
    }
}

/// Usage against a limit, for a table cell with a `<meter>` (drawn only when there is a limit).
pub(crate) struct UsageView {
    pub used: String,
    pub limit: String,
    pub value: u64,
    pub max: u64,
    pub metered: bool,
}

impl UsageView {
    pub(crate) fn bytes(used: u64, limit: Option<u64>) -> Self {
        Self {
            used: human_bytes(used),
            limit: limit.map_or_else(|| "unlimited".into(), human_bytes),
            value: used,
            max: limit.unwrap_or(0),
            metered: limit.is_some_and(|l| l > 0),
        }
    }
}

/// Field errors for one field, for a form shown again.
pub(crate) fn field_errors(field: &'static str, message: impl Into<String>) -> FieldErrors {
    let mut errors = FieldErrors::default();
    errors.add(field, message);
    errors
}

/// The value of `result`, or its message recorded against `field`.
pub(crate) fn check<T: Default>(
    errors: &mut FieldErrors,
    field: &'static str,
    result: Result<T, String>,
) -> T {
    result.unwrap_or_else(|e| {
        errors.add(field, e);
        T::default()
    })
}

/// A store conflict as a field error of the form; anything else stays an error.
pub(crate) fn conflict_to_field(
    e: provision::Error,
    field: &'static str,
) -> Result<FieldErrors, AppError> {
    match e {
        provision::Error::Store(StoreError::Conflict(m) | StoreError::Invalid(m)) => {
            Ok(field_errors(field, m))
        }
        other => Err(other.into()),
    }
}

/// Why a domain's new settings were refused, under the field concerned: a quota that a user's
/// quota would exceed under the quota (or quotas) the store names, anything else about the input
/// under the user limit.
fn settings_errors(e: provision::Error) -> Result<FieldErrors, AppError> {
    let mut errors = FieldErrors::default();
    match e {
        provision::Error::Store(
            outside @ StoreError::QuotaOutsideDomain {
                bytes, messages, ..
            },
        ) => {
            if bytes {
                errors.add("quota_bytes", outside.to_string());
            }
            if messages {
                errors.add("quota_messages", outside.to_string());
            }
        }
        provision::Error::Store(StoreError::Conflict(m) | StoreError::Invalid(m))
        | provision::Error::Invalid(m) => errors.add("max_users", m),
        other => return Err(other.into()),
    }
    Ok(errors)
}

// ---------------------------------------------------------------------------------------------
// The list.

struct DomainRow {
    name: String,
    href: String,
    users: u64,
    max_users: String,
    usage: UsageView,
    enabled: bool,
    /// In migration mode: "N of M moved from URL".
    migration: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "domains.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<DomainRow>,
    pager: Pager,
}

async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(query): Query<ListQuery>,
) -> Result<Response, AppError> {
    let size = query.page_size(state.config.page_size);
    let page = provision::domains(&state.roles, &actor, &query, size).await?;
    let rows = page
        .items
        .iter()
        .map(|d| DomainRow {
            name: d.name.to_string(),
            href: segment(d.name.as_str()),
            users: d.users,
            max_users: d.max_users.map_or_else(|| "∞".into(), |m| m.to_string()),
            usage: UsageView::bytes(d.usage.bytes, d.quota.bytes),
            enabled: d.enabled,
            migration: d
                .migrate_from
                .as_ref()
                .map(|url| format!("{} of {} moved from {url}", d.migrated_users, d.users)),
        })
        .collect();
    Ok(ListPage {
        chrome: Chrome::from(&actor),
        rows,
        pager: Pager::new(&query, page.total, size),
    }
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// Creation.

#[derive(Template, WebTemplate)]
#[template(path = "domains_new.html")]
struct NewPage {
    chrome: Chrome,
    name: String,
    errors: FieldErrors,
}

#[derive(Debug, Default, Deserialize)]
struct NewForm {
    #[serde(default)]
    name: String,
}

async fn new_form(actor: Actor) -> Result<Response, AppError> {
    actor.require_super()?;
    Ok(NewPage {
        chrome: Chrome::from(&actor),
        name: String::new(),
        errors: FieldErrors::default(),
    }
    .into_response())
}

async fn create(
    State(state): State<AppState>,
    actor: Actor,
    Form(form): Form<NewForm>,
) -> Result<Response, AppError> {
    actor.require_super()?;
    let created = match DomainName::parse(&form.name) {
        Ok(name) => provision::create_domain(&state.roles, &actor, &name, &DomainChange::default())
            .await
            .map(|d| d.name),
        Err(e) => Err(e.into()),
    };
    match created {
        Ok(name) => Ok(flash::done(
            &format!("/domains/{}", segment(name.as_str())),
            format!("Domain {name} created"),
        )),
        Err(e) => {
            let errors = conflict_to_field(e, "name")?;
            let page = NewPage {
                chrome: Chrome::from(&actor),
                name: form.name,
                errors,
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The settings page.

/// The settings form as typed (or as stored, turned into text).
#[derive(Debug, Default, Deserialize)]
struct SettingsForm {
    #[serde(default)]
    quota_bytes: String,
    #[serde(default)]
    quota_messages: String,
    #[serde(default)]
    max_users: String,
    #[serde(default)]
    login_forms: Vec<String>,
    #[serde(default)]
    enabled: Option<String>,
    /// The recycle bin's days; empty keeps them.
    #[serde(default)]
    bin_days: String,
    #[serde(default)]
    bin_counts_quota: Option<String>,
    /// Set by the form that shows the bin settings, so a post without them changes neither.
    /// That form shows the self-service switch too, so the same holds for it.
    #[serde(default)]
    bin_form: Option<String>,
    #[serde(default)]
    self_service: Option<String>,
    #[serde(default)]
    app_passwords_only: Option<String>,
}

impl SettingsForm {
    fn from_detail(d: &DomainDetail) -> Self {
        Self {
            quota_bytes: show_limit(d.quota.bytes, Unit::Bytes),
            quota_messages: show_limit(d.quota.messages, Unit::Count),
            max_users: d.max_users.map(|m| m.to_string()).unwrap_or_default(),
            login_forms: LoginForm::ALL
                .into_iter()
                .filter(|f| d.login_forms.allows(*f))
                .map(|f| f.name().to_string())
                .collect(),
            enabled: d.enabled.then(|| "on".into()),
            bin_days: d.bin.days.to_string(),
            bin_counts_quota: d.bin.counts_quota.then(|| "on".into()),
            bin_form: Some("1".into()),
            self_service: d.self_service.then(|| "on".into()),
            app_passwords_only: d.app_passwords_only.then(|| "on".into()),
        }
    }

    /// The form sets every setting the page shows (APOP is not on it).
    fn change(&self) -> Result<DomainChange, FieldErrors> {
        let mut errors = FieldErrors::default();
        let bytes = check(
            &mut errors,
            "quota_bytes",
            limit(&self.quota_bytes, Unit::Bytes),
        );
        let messages = check(
            &mut errors,
            "quota_messages",
            limit(&self.quota_messages, Unit::Count),
        );
        let max_users = check(
            &mut errors,
            "max_users",
            limit(&self.max_users, Unit::Count),
        );
        let forms = provision::login_forms(&self.login_forms)
            .map(Some)
            .map_err(|e| e.to_string());
        let forms = check(&mut errors, "login_forms", forms);
        let bin_days = match self.bin_days.trim() {
            "" => None,
            days => check(
                &mut errors,
                "bin_days",
                days.parse::<u32>()
                    .ok()
                    .filter(|d| *d <= mailstore::MAX_BIN_DAYS)
                    .map(Some)
                    .ok_or_else(|| {
                        format!(
                            "a number of days from 0 (off) to {}",
                            mailstore::MAX_BIN_DAYS
                        )
                    }),
            ),
        };
        match forms {
            Some(login_forms) if errors.is_empty() => Ok(DomainChange {
                quota: QuotaChange {
                    bytes: Some(bytes),
                    messages: Some(messages),
                },
                max_users: Some(max_users),
                login_forms: Some(login_forms),
                allow_apop: None,
                enabled: Some(self.enabled.as_deref() == Some("on")),
                migrate_from: None,
                bin_days,
                bin_counts_quota: self
                    .bin_form
                    .is_some()
                    .then(|| self.bin_counts_quota.as_deref() == Some("on")),
                self_service: self
                    .bin_form
                    .is_some()
                    .then(|| self.self_service.as_deref() == Some("on")),
                app_passwords_only: self
                    .bin_form
                    .is_some()
                    .then(|| self.app_passwords_only.as_deref() == Some("on")),
            }),
            _ => Err(errors),
        }
    }

    /// Each login form with whether its box is ticked.
    fn boxes(&self) -> Vec<(&'static str, bool)> {
        LoginForm::ALL
            .into_iter()
            .map(|f| (f.name(), self.login_forms.iter().any(|n| n == f.name())))
            .collect()
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "domains_edit.html")]
struct EditPage {
    chrome: Chrome,
    domain: DomainDetail,
    href: String,
    usage: UsageView,
    form: SettingsForm,
    boxes: Vec<(&'static str, bool)>,
    aliases: Vec<(String, String)>,
    alias: String,
    errors: FieldErrors,
}

impl EditPage {
    fn new(actor: &Actor, domain: DomainDetail, form: SettingsForm) -> Self {
        Self {
            chrome: Chrome::from(actor),
            href: segment(domain.name.as_str()),
            usage: UsageView::bytes(domain.usage.bytes, domain.quota.bytes),
            boxes: form.boxes(),
            aliases: domain
                .aliases
                .iter()
                .map(|a| (a.to_string(), segment(a.as_str())))
                .collect(),
            form,
            domain,
            alias: String::new(),
            errors: FieldErrors::default(),
        }
    }

    fn invalid(mut self, errors: FieldErrors) -> Response {
        self.errors = errors;
        (StatusCode::UNPROCESSABLE_ENTITY, self).into_response()
    }
}

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    let domain = provision::domain(&state.roles, &actor, &name).await?;
    let form = SettingsForm::from_detail(&domain);
    Ok(EditPage::new(&actor, domain, form).into_response())
}

async fn update(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Form(form): Form<SettingsForm>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    actor.require_super()?;
    let before = provision::domain(&state.roles, &actor, &name).await?;
    let change = match form.change() {
        Ok(c) => c,
        Err(errors) => return Ok(EditPage::new(&actor, before, form).invalid(errors)),
    };
    match provision::update_domain(&state.roles, &actor, &name, &change).await {
        Ok(after) => Ok(flash::done(
            &format!("/domains/{}", segment(after.name.as_str())),
            format!("Settings of {} saved", after.name),
        )),
        Err(e) => {
            let errors = settings_errors(e)?;
            Ok(EditPage::new(&actor, before, form).invalid(errors))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct AliasForm {
    #[serde(default)]
    alias: String,
}

async fn add_alias(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Form(form): Form<AliasForm>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    actor.require_super()?;
    let added = match DomainName::parse(&form.alias) {
        Ok(alias) => provision::add_alias(&state.roles, &actor, &name, &alias)
            .await
            .map(|_| alias),
        Err(e) => Err(e.into()),
    };
    let alias = match added {
        Ok(alias) => alias,
        Err(e) => {
            let errors = conflict_to_field(e, "alias")?;
            let before = provision::domain(&state.roles, &actor, &name).await?;
            let mut page =
                EditPage::new(&actor, before.clone(), SettingsForm::from_detail(&before));
            page.alias = form.alias;
            return Ok(page.invalid(errors));
        }
    };
    Ok(flash::done(
        &format!("/domains/{}", segment(name.as_str())),
        format!("Alias {alias} added to {name}"),
    ))
}

async fn remove_alias(
    State(state): State<AppState>,
    actor: Actor,
    Path((raw, alias)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    actor.require_super()?;
    // Only an alias of this domain: the URL names both, and they must agree.
    let alias = DomainName::parse(&alias).map_err(|_| AppError::NotFound)?;
    provision::remove_alias(&state.roles, &actor, &name, &alias).await?;
    Ok(flash::done(
        &format!("/domains/{}", segment(name.as_str())),
        format!("Alias {alias} of {name} removed"),
    ))
}

// ---------------------------------------------------------------------------------------------
// Deletion.

/// "Are you sure?" before deleting a domain or a user.
#[derive(Template, WebTemplate)]
#[template(path = "confirm.html")]
pub(crate) struct ConfirmPage {
    pub chrome: Chrome,
    pub title: String,
    pub message: String,
    /// Where the form posts.
    pub action: String,
    /// Where "cancel" goes.
    pub cancel: String,
    /// Whether to offer "also delete users and mail".
    pub offer_force: bool,
    pub errors: FieldErrors,
}

impl ConfirmPage {
    fn domain(actor: &Actor, d: &DomainDetail) -> Self {
        let href = segment(d.name.as_str());
        Self {
            chrome: Chrome::from(actor),
            title: format!("Delete domain {}", d.name),
            message: format!(
                "Delete the domain {} ({} user(s), {} of mail)?",
                d.name,
                d.users,
                human_bytes(d.usage.bytes)
            ),
            action: format!("/domains/{href}/delete"),
            cancel: format!("/domains/{href}"),
            offer_force: true,
            errors: FieldErrors::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct DeleteForm {
    #[serde(default)]
    force: Option<String>,
}

async fn confirm_delete(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    actor.require_super()?;
    let domain = provision::domain(&state.roles, &actor, &name).await?;
    Ok(ConfirmPage::domain(&actor, &domain).into_response())
}

async fn delete(
    State(state): State<AppState>,
    actor: Actor,
    Path(raw): Path<String>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    actor.require_super()?;
    let force = form.force.is_some_and(|v| v == "on" || v == "true");
    match provision::delete_domain(&state.roles, &actor, &name, force).await {
        Ok(()) => Ok(flash::done("/domains", format!("Domain {name} deleted"))),
        Err(e) => {
            let errors = conflict_to_field(e, "force")?;
            let domain = provision::domain(&state.roles, &actor, &name).await?;
            let mut page = ConfirmPage::domain(&actor, &domain);
            page.errors = errors;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_and_miss_fixed_routes() {
        assert_eq!(segment("example.com"), "example.com");
        assert_eq!(segment("a/b?c#d"), "a%2Fb%3Fc%23d");
        assert_eq!(segment("x+y%z"), "x%2By%25z");
        assert_eq!(segment("new"), "%6Eew");
        assert_eq!(segment("bulk"), "%62ulk");
        assert_eq!(segment("news"), "news");
    }
}

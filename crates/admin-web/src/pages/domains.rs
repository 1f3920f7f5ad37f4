//! Domains: the list, creation, the settings page with its aliases, and deletion. The store
//! operations behind them (`create_domain`, `update_domain`, ...) are shared with the API so
//! both audit the same way.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::Form;
use mailstore::{
    DomainDetail, DomainName, DomainSettings, LoginForm, LoginForms, Quota, StoreError,
};
use serde::Deserialize;

use crate::api::domain_json;
use crate::auth::{Actor, Audit, Chrome, FieldErrors};
use crate::error::AppError;
use crate::pages::{ListQuery, Pager, human_bytes};
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

/// Multiplier of the K/M/G suffixes for byte quotas.
pub(crate) const BYTES: u64 = 1024;
/// Multiplier of the K/M/G suffixes for counts (messages, users).
pub(crate) const COUNT: u64 = 1000;

/// A limit as typed in a form: `""` or `unlimited` is no limit; otherwise a whole number with an
/// optional K, M or G suffix, powers of `unit`.
pub(crate) fn parse_quota(raw: &str, unit: u64) -> Result<Option<u64>, String> {
    let s = raw.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let (digits, power) = match s.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&s[..i], 1),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&s[..i], 2),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&s[..i], 3),
        _ => (s, 0),
    };
    let digits = digits.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a whole number, optionally with K, M or G, or empty for unlimited".into());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit.checked_pow(power)?))
        .map(Some)
        .ok_or_else(|| "too large".into())
}

/// A limit the way `parse_quota` reads it back, with the largest exact suffix.
pub(crate) fn show_quota(value: Option<u64>, unit: u64) -> String {
    let Some(n) = value else {
        return String::new();
    };
    for (suffix, power) in [("G", 3), ("M", 2), ("K", 1)] {
        let step = unit.pow(power);
        if n != 0 && n % step == 0 {
            return format!("{}{suffix}", n / step);
        }
    }
    n.to_string()
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

/// A query-string value.
pub(crate) fn query_value(raw: &str) -> String {
    form_urlencoded::byte_serialize(raw.as_bytes()).collect()
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

pub(crate) fn settings_of(d: &DomainDetail) -> DomainSettings {
    DomainSettings {
        quota: d.quota,
        max_users: d.max_users,
        login_forms: d.login_forms,
        enabled: d.enabled,
    }
}

/// Login forms from their names (`at`, `percent`, ...); at least one.
pub(crate) fn login_forms(names: &[String]) -> Result<LoginForms, String> {
    LoginForms::parse(&names.join(",")).map_err(|e| e.to_string())
}

pub(crate) async fn detail(state: &AppState, name: &DomainName) -> Result<DomainDetail, AppError> {
    state
        .store
        .domain_detail(name)
        .await?
        .ok_or(AppError::NotFound)
}

/// Adds a domain, lets `edit` change its default settings (it says whether it did), and audits.
pub(crate) async fn create_domain(
    state: &AppState,
    actor: &Actor,
    name: &DomainName,
    edit: impl FnOnce(&mut DomainSettings) -> bool + Send,
) -> Result<DomainDetail, AppError> {
    actor.require_super()?;
    state.store.add_domain(name).await?;
    let mut settings = settings_of(&detail(state, name).await?);
    if edit(&mut settings) {
        state.store.update_domain(name, &settings).await?;
    }
    let after = detail(state, name).await?;
    let audit = Audit::new("domain.create", name.as_str(), Some(name)).after(domain_json(&after));
    actor.audit(state, audit).await;
    Ok(after)
}

pub(crate) async fn update_domain(
    state: &AppState,
    actor: &Actor,
    before: &DomainDetail,
    settings: &DomainSettings,
) -> Result<DomainDetail, AppError> {
    actor.require_super()?;
    let name = &before.name;
    state.store.update_domain(name, settings).await?;
    let after = detail(state, name).await?;
    let audit = Audit::new("domain.update", name.as_str(), Some(name))
        .before(domain_json(before))
        .after(domain_json(&after));
    actor.audit(state, audit).await;
    Ok(after)
}

pub(crate) async fn delete_domain(
    state: &AppState,
    actor: &Actor,
    name: &DomainName,
    force: bool,
) -> Result<(), AppError> {
    actor.require_super()?;
    let before = detail(state, name).await?;
    state.store.remove_domain(name, force).await?;
    let audit = Audit::new("domain.delete", name.as_str(), Some(name)).before(domain_json(&before));
    actor.audit(state, audit).await;
    Ok(())
}

/// A store conflict as a field error of the form; anything else stays an error.
pub(crate) fn conflict_to_field(e: AppError, field: &'static str) -> Result<FieldErrors, AppError> {
    match e {
        AppError::Store(StoreError::Conflict(m) | StoreError::Invalid(m)) => {
            Ok(field_errors(field, m))
        }
        other => Err(other),
    }
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
}

#[derive(Template, WebTemplate)]
#[template(path = "domains.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<DomainRow>,
    pager: Pager,
    q_enc: String,
}

async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(query): Query<ListQuery>,
) -> Result<Response, AppError> {
    let size = state.config.page_size;
    let page = state
        .store
        .domain_page(&actor.scope, query.q.trim(), query.offset(size), size)
        .await?;
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
        })
        .collect();
    Ok(ListPage {
        chrome: Chrome::from(&actor),
        rows,
        pager: Pager::new(&query, page.total, size),
        q_enc: query_value(&query.q),
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
        Ok(name) => {
            let name = actor.domain(name.as_str())?;
            create_domain(&state, &actor, &name, |_| false)
                .await
                .map(|d| d.name)
        }
        Err(e) => Err(AppError::Store(e)),
    };
    match created {
        Ok(name) => {
            Ok(Redirect::to(&format!("/domains/{}", segment(name.as_str()))).into_response())
        }
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
}

impl SettingsForm {
    fn from_detail(d: &DomainDetail) -> Self {
        Self {
            quota_bytes: show_quota(d.quota.bytes, BYTES),
            quota_messages: show_quota(d.quota.messages, COUNT),
            max_users: d.max_users.map(|m| m.to_string()).unwrap_or_default(),
            login_forms: LoginForm::ALL
                .into_iter()
                .filter(|f| d.login_forms.allows(*f))
                .map(|f| f.name().to_string())
                .collect(),
            enabled: d.enabled.then(|| "on".into()),
        }
    }

    fn settings(&self) -> Result<DomainSettings, FieldErrors> {
        let mut errors = FieldErrors::default();
        let bytes = check(
            &mut errors,
            "quota_bytes",
            parse_quota(&self.quota_bytes, BYTES),
        );
        let messages = check(
            &mut errors,
            "quota_messages",
            parse_quota(&self.quota_messages, COUNT),
        );
        let max_users = check(
            &mut errors,
            "max_users",
            parse_quota(&self.max_users, COUNT),
        );
        let forms = login_forms(&self.login_forms).map(Some);
        let forms = check(&mut errors, "login_forms", forms);
        match forms {
            Some(login_forms) if errors.is_empty() => Ok(DomainSettings {
                quota: Quota { bytes, messages },
                max_users,
                login_forms,
                enabled: self.enabled.as_deref() == Some("on"),
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
    let domain = detail(&state, &name).await?;
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
    let before = detail(&state, &name).await?;
    let settings = match form.settings() {
        Ok(s) => s,
        Err(errors) => return Ok(EditPage::new(&actor, before, form).invalid(errors)),
    };
    match update_domain(&state, &actor, &before, &settings).await {
        Ok(_) => Ok(Redirect::to(&format!("/domains/{}", segment(name.as_str()))).into_response()),
        Err(e) => {
            let errors = conflict_to_field(e, "max_users")?;
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
    let before = detail(&state, &name).await?;
    let added = match DomainName::parse(&form.alias) {
        Ok(alias) => state
            .store
            .add_alias(&alias, &name)
            .await
            .map_err(AppError::from),
        Err(e) => Err(AppError::Store(e)),
    };
    if let Err(e) = added {
        let errors = conflict_to_field(e, "alias")?;
        let mut page = EditPage::new(&actor, before.clone(), SettingsForm::from_detail(&before));
        page.alias = form.alias;
        return Ok(page.invalid(errors));
    }
    let after = detail(&state, &name).await?;
    let audit = Audit::new("domain.alias.add", name.as_str(), Some(&name))
        .before(domain_json(&before))
        .after(domain_json(&after));
    actor.audit(&state, audit).await;
    Ok(Redirect::to(&format!("/domains/{}", segment(name.as_str()))).into_response())
}

async fn remove_alias(
    State(state): State<AppState>,
    actor: Actor,
    Path((raw, alias)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let name = actor.domain(&raw)?;
    actor.require_super()?;
    let before = detail(&state, &name).await?;
    // Only an alias of this domain: the URL names both, and they must agree.
    let alias = DomainName::parse(&alias).map_err(|_| AppError::NotFound)?;
    if !before.aliases.contains(&alias) {
        return Err(AppError::NotFound);
    }
    state.store.remove_alias(&alias).await?;
    let after = detail(&state, &name).await?;
    let audit = Audit::new("domain.alias.remove", name.as_str(), Some(&name))
        .before(domain_json(&before))
        .after(domain_json(&after));
    actor.audit(&state, audit).await;
    Ok(Redirect::to(&format!("/domains/{}", segment(name.as_str()))).into_response())
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
    let domain = detail(&state, &name).await?;
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
    match delete_domain(&state, &actor, &name, force).await {
        Ok(()) => Ok(Redirect::to("/domains").into_response()),
        Err(e) => {
            let errors = conflict_to_field(e, "force")?;
            let mut page = ConfirmPage::domain(&actor, &detail(&state, &name).await?);
            page.errors = errors;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_with_suffixes() {
        assert_eq!(parse_quota("", BYTES), Ok(None));
        assert_eq!(parse_quota("  Unlimited ", BYTES), Ok(None));
        assert_eq!(parse_quota("0", BYTES), Ok(Some(0)));
        assert_eq!(parse_quota("1500", BYTES), Ok(Some(1500)));
        assert_eq!(parse_quota("10M", BYTES), Ok(Some(10 << 20)));
        assert_eq!(parse_quota("1g", BYTES), Ok(Some(1 << 30)));
        assert_eq!(parse_quota("2 K", BYTES), Ok(Some(2048)));
        assert_eq!(parse_quota("5K", COUNT), Ok(Some(5000)));
        for bad in ["-1", "1.5G", "K", "10X", "ten", "1e6", "+5"] {
            assert!(parse_quota(bad, BYTES).is_err(), "{bad}");
        }
        assert!(parse_quota("99999999999G", BYTES).is_err());
        assert!(parse_quota("99999999999999999999", BYTES).is_err());
    }

    #[test]
    fn quotas_show_as_they_parse() {
        for (n, unit, shown) in [
            (None, BYTES, ""),
            (Some(0), BYTES, "0"),
            (Some(1500), BYTES, "1500"),
            (Some(10 << 20), BYTES, "10M"),
            (Some(3 << 30), BYTES, "3G"),
            (Some(5000), COUNT, "5K"),
        ] {
            assert_eq!(show_quota(n, unit), shown);
            assert_eq!(parse_quota(shown, unit), Ok(n));
        }
    }

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

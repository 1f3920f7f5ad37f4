//! Admin accounts, for super admins: the list (role, domains, last sign-in, tokens), adding an
//! admin, changing their domains, resetting their password, disabling, enabling and removing
//! them. And "My account" for every admin: their own password (asking the current one) and
//! their last 20 sign-ins, read from the audit log where sign-ins are already recorded.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::CookieJar;
use mailstore::{AdminListing, Scope, StoreError};
use serde::Deserialize;

use crate::auth::{Chrome, FieldErrors, SESSION_COOKIE, hash_secret};
use crate::error::AppError;
use crate::flash;
use crate::pages::domains::{ConfirmPage, segment};
use crate::pages::human_time;
use crate::password::PasswordFor;
use crate::provision::admins::{self as ops, describe_scope, scope_of};
use crate::provision::{self, Actor};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admins", get(list).post(create))
        .route("/admins/{email}", get(edit))
        .route("/admins/{email}/scope", post(set_scope))
        .route("/admins/{email}/password", post(set_password))
        .route("/admins/{email}/disable", post(disable))
        .route("/admins/{email}/enable", post(enable))
        .route("/admins/{email}/remove", get(confirm_remove).post(remove))
        .route("/account", get(account))
        .route("/account/password", post(own_password))
}

/// How many of their own sign-ins "My account" shows.
const SIGNIN_HISTORY: u64 = 20;

fn href(email: &str) -> String {
    format!("/admins/{}", segment(email))
}

/// What to tell the admin of a refused change, when it is about their input (a short password,
/// the last super admin, a domain that does not exist); any other error stays an error.
fn refusal(e: provision::Error, missing_domain: bool) -> Result<String, AppError> {
    match e {
        provision::Error::Invalid(m) => Ok(m),
        provision::Error::Store(StoreError::Conflict(m) | StoreError::Invalid(m)) => Ok(m),
        provision::Error::Store(StoreError::NotFound(m)) if missing_domain => {
            Ok(format!("No {m}."))
        }
        other => Err(other.into()),
    }
}

/// A refusal as the message under `field`.
fn to_field(e: provision::Error, field: &'static str) -> Result<FieldErrors, AppError> {
    let mut errors = FieldErrors::default();
    errors.add(field, refusal(e, field == "domains")?);
    Ok(errors)
}

// ---------------------------------------------------------------------------------------------
// The list and adding an admin.

struct Row {
    email: String,
    href: String,
    role: &'static str,
    domains: String,
    last_signin: String,
    tokens: u64,
    disabled: bool,
}

impl From<&AdminListing> for Row {
    fn from(a: &AdminListing) -> Self {
        let (role, domains) = match &a.account.scope {
            Scope::All => ("super admin", "all".to_string()),
            Scope::Domains(d) => (
                "domain admin",
                d.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", "),
            ),
        };
        Self {
            email: a.account.email.clone(),
            href: href(&a.account.email),
            role,
            domains,
            last_signin: last_signin(&a.account),
            tokens: a.tokens,
            disabled: a.account.disabled,
        }
    }
}

fn last_signin(a: &mailstore::AdminAccount) -> String {
    match (a.last_signin_at, &a.last_signin_ip) {
        (None, _) => "never".into(),
        (Some(at), Some(ip)) => format!("{} from {ip}", human_time(at)),
        (Some(at), None) => human_time(at),
    }
}

#[derive(Debug, Default, Deserialize)]
struct NewAdmin {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    /// `super` or `domains`.
    #[serde(default)]
    role: String,
    /// Comma-separated.
    #[serde(default)]
    domains: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admins.html")]
struct AdminsPage {
    chrome: Chrome,
    rows: Vec<Row>,
    form: NewAdmin,
    errors: FieldErrors,
    min_password: usize,
}

async fn list_page(
    state: &AppState,
    actor: &Actor,
    form: NewAdmin,
    errors: FieldErrors,
) -> Result<AdminsPage, AppError> {
    let rows = ops::list_admins(&state.roles, actor)
        .await?
        .iter()
        .map(Row::from)
        .collect();
    Ok(AdminsPage {
        chrome: Chrome::from(actor),
        rows,
        form,
        errors,
        min_password: PasswordFor::Admin.min_chars(),
    })
}

async fn list(State(state): State<AppState>, actor: Actor) -> Result<AdminsPage, AppError> {
    list_page(&state, &actor, NewAdmin::default(), FieldErrors::default()).await
}

fn domain_list(raw: &str) -> Vec<&str> {
    raw.split([',', ' ', '\n'])
        .filter(|d| !d.is_empty())
        .collect()
}

async fn create(
    State(state): State<AppState>,
    actor: Actor,
    Form(form): Form<NewAdmin>,
) -> Result<Response, AppError> {
    actor.require_super()?;
    let email = form.email.trim().to_ascii_lowercase();
    let scope = match scope_of(form.role == "super", &domain_list(&form.domains)) {
        Ok(s) => s,
        Err(e) => {
            let errors = to_field(e, "domains")?;
            let page = list_page(&state, &actor, form, errors).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    let password = form.password.clone();
    match ops::create_admin(&state.roles, &actor, &email, password, &scope).await {
        Ok(_) => Ok(flash::done(
            "/admins",
            format!("Added {email} as {}", describe_scope(&scope)),
        )),
        Err(e) => {
            let field = match &e {
                provision::Error::Invalid(m) if m.contains("password") => "password",
                provision::Error::Store(StoreError::NotFound(_)) => "domains",
                _ => "email",
            };
            let errors = to_field(e, field)?;
            let form = NewAdmin {
                password: String::new(),
                ..form
            };
            let page = list_page(&state, &actor, form, errors).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One admin.

#[derive(Template, WebTemplate)]
#[template(path = "admins_edit.html")]
struct EditPage {
    chrome: Chrome,
    row: Row,
    is_super: bool,
    domains: String,
    yourself: bool,
    errors: FieldErrors,
    min_password: usize,
}

async fn edit_page(
    state: &AppState,
    actor: &Actor,
    email: &str,
    domains: Option<String>,
    errors: FieldErrors,
) -> Result<EditPage, AppError> {
    let a = ops::admin(&state.roles, actor, email).await?;
    let row = Row::from(&a);
    Ok(EditPage {
        chrome: Chrome::from(actor),
        is_super: a.account.scope.is_all(),
        domains: domains.unwrap_or_else(|| {
            if a.account.scope.is_all() {
                String::new()
            } else {
                row.domains.clone()
            }
        }),
        yourself: actor.id == Some(a.account.id),
        row,
        errors,
        min_password: PasswordFor::Admin.min_chars(),
    })
}

async fn edit(
    State(state): State<AppState>,
    actor: Actor,
    Path(email): Path<String>,
) -> Result<EditPage, AppError> {
    edit_page(&state, &actor, &email, None, FieldErrors::default()).await
}

#[derive(Debug, Default, Deserialize)]
struct ScopeForm {
    #[serde(default)]
    role: String,
    #[serde(default)]
    domains: String,
}

async fn set_scope(
    State(state): State<AppState>,
    actor: Actor,
    Path(email): Path<String>,
    Form(form): Form<ScopeForm>,
) -> Result<Response, AppError> {
    let result = match scope_of(form.role == "super", &domain_list(&form.domains)) {
        Ok(scope) => ops::set_scope(&state.roles, &actor, &email, &scope)
            .await
            .map(|a| a.account),
        Err(e) => Err(e),
    };
    match result {
        Ok(a) => Ok(flash::done(
            &href(&a.email),
            format!("{} is now {}", a.email, describe_scope(&a.scope)),
        )),
        Err(e) => {
            let errors = to_field(e, "domains")?;
            let page = edit_page(&state, &actor, &email, Some(form.domains), errors).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
}

async fn set_password(
    State(state): State<AppState>,
    actor: Actor,
    Path(email): Path<String>,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    match ops::set_password(&state.roles, &actor, &email, form.password).await {
        Ok(()) => {
            let email = email.trim().to_ascii_lowercase();
            Ok(flash::done(
                &href(&email),
                format!("Password of {email} changed; their sessions and API tokens ended"),
            ))
        }
        Err(e) => {
            let errors = to_field(e, "password")?;
            let page = edit_page(&state, &actor, &email, None, errors).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

async fn switch(
    state: &AppState,
    actor: &Actor,
    email: &str,
    disabled: bool,
) -> Result<Response, AppError> {
    let to = href(&email.trim().to_ascii_lowercase());
    match ops::set_disabled(&state.roles, actor, email, disabled).await {
        Ok(a) if disabled => Ok(flash::done(
            &href(&a.account.email),
            format!(
                "{} disabled; their sessions and API tokens ended",
                a.account.email
            ),
        )),
        Ok(a) => Ok(flash::done(
            &href(&a.account.email),
            format!("{} enabled", a.account.email),
        )),
        Err(e) => Ok(flash::failed(&to, refusal(e, false)?)),
    }
}

async fn disable(
    State(state): State<AppState>,
    actor: Actor,
    Path(email): Path<String>,
) -> Result<Response, AppError> {
    switch(&state, &actor, &email, true).await
}

async fn enable(
    State(state): State<AppState>,
    actor: Actor,
    Path(email): Path<String>,
) -> Result<Response, AppError> {
    switch(&state, &actor, &email, false).await
}

fn confirm_page(actor: &Actor, a: &AdminListing) -> ConfirmPage {
    let email = &a.account.email;
    ConfirmPage {
        chrome: Chrome::from(actor),
        title: format!("Remove admin {email}"),
        message: format!(
            "Remove the admin account {email} ({})? Their sessions end and their {} API \
             token(s) stop working; their past actions stay in the audit log.",
            describe_scope(&a.account.scope),
            a.tokens
        ),
        action: format!("{}/remove", href(email)),
        cancel: href(email),
        offer_force: false,
        errors: FieldErrors::default(),
    }
}

async fn confirm_remove(
    State(state): State<AppState>,
    actor: Actor,
    Path(email): Path<String>,
) -> Result<Response, AppError> {
    let a = ops::admin(&state.roles, &actor, &email).await?;
    Ok(confirm_page(&actor, &a).into_response())
}

async fn remove(
    State(state): State<AppState>,
    actor: Actor,
    Path(email): Path<String>,
) -> Result<Response, AppError> {
    let email = email.trim().to_ascii_lowercase();
    match ops::remove(&state.roles, &actor, &email).await {
        Ok(()) => Ok(flash::done("/admins", format!("Admin {email} removed"))),
        Err(e) => Ok(flash::failed(&href(&email), refusal(e, false)?)),
    }
}

// ---------------------------------------------------------------------------------------------
// My account.

struct SigninRow {
    at: String,
    ip: String,
    success: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    role: String,
    signins: Vec<SigninRow>,
    errors: FieldErrors,
    min_password: usize,
}

async fn account_page(
    state: &AppState,
    actor: &Actor,
    errors: FieldErrors,
) -> Result<AccountPage, AppError> {
    actor.admin_id()?;
    let signins = state
        .roles
        .admin
        .admin_signins(&actor.name, SIGNIN_HISTORY)
        .await?
        .into_iter()
        .map(|e| SigninRow {
            at: human_time(e.at),
            ip: e.ip.unwrap_or_else(|| "-".into()),
            success: e.success,
        })
        .collect();
    Ok(AccountPage {
        chrome: Chrome::from(actor),
        role: describe_scope(&actor.scope),
        signins,
        errors,
        min_password: PasswordFor::Admin.min_chars(),
    })
}

async fn account(State(state): State<AppState>, actor: Actor) -> Result<AccountPage, AppError> {
    account_page(&state, &actor, FieldErrors::default()).await
}

async fn own_password(
    State(state): State<AppState>,
    actor: Actor,
    jar: CookieJar,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    let keep = jar.get(SESSION_COOKIE).map(|c| hash_secret(c.value()));
    let result = ops::change_own_password(
        &state.roles,
        &actor,
        form.current,
        form.password,
        keep.as_deref(),
    )
    .await;
    match result {
        Ok(()) => Ok(flash::done(
            "/account",
            "Your password was changed; your other sessions and your API tokens ended",
        )),
        Err(e) => {
            let field = match &e {
                provision::Error::Invalid(m) if m.contains("current") => "current",
                _ => "password",
            };
            let errors = to_field(e, field)?;
            let page = account_page(&state, &actor, errors).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

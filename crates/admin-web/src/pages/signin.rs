//! Sign-in, sign-out and the one-time bootstrap link that creates the first super admin.
//!
//! The sign-in form is protected by a double-submit token (a random cookie echoed in a hidden
//! field) since there is no session yet to hold a CSRF token; the `Origin` check of
//! `auth::browser` applies too. Failed sign-ins count per account and per client address in the
//! store (shared by every frontend), and each attempt is audited.

use std::sync::OnceLock;
use std::time::Duration;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use mailstore::{AdminId, AuditEntry, Scope};
use serde::Deserialize;

use crate::auth::{self, Actor, Audit, ClientIp, hash_secret, random_token, secrets_equal};
use crate::error::AppError;
use crate::state::AppState;

/// The double-submit cookie of the sign-in and bootstrap forms.
const PRE_COOKIE: &str = "__Host-pophost-pre";
/// Window of the sign-in failure count.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/signin", get(show).post(submit))
        .route("/signout", post(signout))
        .route("/bootstrap/{token}", get(bootstrap_form).post(bootstrap))
}

#[derive(Template, WebTemplate)]
#[template(path = "signin.html")]
struct SigninPage {
    pre: String,
    email: String,
    error: Option<String>,
    /// Set on the bootstrap page: where the form posts.
    bootstrap: Option<String>,
}

#[derive(Deserialize)]
struct SigninForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    _pre: String,
}

/// The form, with a fresh double-submit token.
fn form_page(status: StatusCode, page: SigninPage) -> Response {
    let pre = page.pre.clone();
    (
        status,
        [(header::SET_COOKIE, auth::set_cookie(PRE_COOKIE, Some(&pre)))],
        page,
    )
        .into_response()
}

fn pre_ok(headers: &HeaderMap, sent: &str) -> bool {
    auth::cookie(headers, PRE_COOKIE).is_some_and(|c| !sent.is_empty() && secrets_equal(&c, sent))
}

async fn show(actor: Option<Actor>) -> Response {
    if actor.is_some() {
        return Redirect::to("/").into_response();
    }
    form_page(
        StatusCode::OK,
        SigninPage {
            pre: random_token(),
            email: String::new(),
            error: None,
            bootstrap: None,
        },
    )
}

/// A hash to verify against when the account does not exist, so that answer takes as long.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY
        .get_or_init(|| tenancy::hash_password(b"pophost admin dummy password").unwrap_or_default())
}

async fn verify(password: String, hash: String) -> Result<bool, AppError> {
    tokio::task::spawn_blocking(move || tenancy::verify_password(password.as_bytes(), &hash))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    req_ip: ClientIp,
    Form(form): Form<SigninForm>,
) -> Result<Response, AppError> {
    if !pre_ok(&headers, &form._pre) {
        return Err(AppError::Csrf);
    }
    let email = form.email.trim().to_ascii_lowercase();
    let ip = req_ip.0.map(|ip| ip.to_string()).unwrap_or_default();
    let keys = [format!("admin:{email}"), format!("adminip:{ip}")];
    let again = |error: &str, status| {
        form_page(
            status,
            SigninPage {
                pre: random_token(),
                email: email.clone(),
                error: Some(error.into()),
                bootstrap: None,
            },
        )
    };
    let failures = state.store.auth_failures(&keys, FAILURE_WINDOW).await?;
    if failures.iter().any(|&n| n >= state.config.signin_failures) {
        record(&state, &email, "signin", &ip, false).await;
        return Ok(again(
            "Too many failed attempts. Try again in a few minutes.",
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let admin = state.store.find_admin(&email).await?;
    let hash = admin
        .as_ref()
        .map_or_else(|| dummy_hash().to_string(), |a| a.password_hash.clone());
    let valid = verify(form.password, hash).await? && admin.is_some();
    let Some(admin) = admin.filter(|_| valid) else {
        state.store.record_auth_failure(&keys).await?;
        record(&state, &email, "signin", &ip, false).await;
        return Ok(again("Wrong e-mail or password.", StatusCode::UNAUTHORIZED));
    };
    record(&state, &email, "signin", &ip, true).await;
    start_session(&state, admin.id).await
}

/// A new session (a new id at every sign-in: no fixation) and the cookie that carries it.
async fn start_session(state: &AppState, admin: AdminId) -> Result<Response, AppError> {
    let now = state.now();
    let idle = i64::try_from(state.config.session_idle.as_millis()).unwrap_or(i64::MAX);
    let absolute = i64::try_from(state.config.session_absolute.as_millis()).unwrap_or(i64::MAX);
    state
        .store
        .prune_admin_sessions(now.saturating_sub(idle), now.saturating_sub(absolute))
        .await?;
    let id = random_token();
    state
        .store
        .create_admin_session(&hash_secret(&id), admin, &random_token(), now)
        .await?;
    let mut res = Redirect::to("/").into_response();
    let h = res.headers_mut();
    if let Ok(v) = auth::set_cookie(auth::SESSION_COOKIE, Some(&id)).parse() {
        h.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = auth::set_cookie(PRE_COOKIE, None).parse() {
        h.append(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// Audits a sign-in attempt, which has no `Actor` yet.
async fn record(state: &AppState, email: &str, action: &str, ip: &str, success: bool) {
    let entry = AuditEntry {
        at: 0,
        actor: email.chars().take(254).collect(),
        action: action.into(),
        object: "admin".into(),
        domain: None,
        before: None,
        after: None,
        ip: (!ip.is_empty()).then(|| ip.to_string()),
        success,
    };
    if let Err(e) = state.store.record_audit(&entry).await {
        tracing::error!(error = %e, "audit record not written");
    }
}

async fn signout(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if let Some(id) = auth::session_cookie(&headers) {
        state.store.delete_admin_session(&hash_secret(&id)).await?;
    }
    actor
        .audit(&state, Audit::new("signout", "admin", None))
        .await;
    Ok((
        [(
            header::SET_COOKIE,
            auth::set_cookie(auth::SESSION_COOKIE, None),
        )],
        Redirect::to("/signin"),
    )
        .into_response())
}

/// The armed bootstrap token, if `token` is it and there is still no admin.
async fn bootstrap_armed(state: &AppState, token: &str) -> Result<bool, AppError> {
    let armed = state
        .bootstrap
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let matches = armed.is_some_and(|a| secrets_equal(&a, token));
    Ok(matches && state.store.count_admins().await? == 0)
}

async fn bootstrap_form(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    if !bootstrap_armed(&state, &token).await? {
        return Err(AppError::NotFound);
    }
    Ok(form_page(
        StatusCode::OK,
        SigninPage {
            pre: random_token(),
            email: String::new(),
            error: None,
            bootstrap: Some(token),
        },
    ))
}

async fn bootstrap(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    req_ip: ClientIp,
    Form(form): Form<SigninForm>,
) -> Result<Response, AppError> {
    if !pre_ok(&headers, &form._pre) {
        return Err(AppError::Csrf);
    }
    if !bootstrap_armed(&state, &token).await? {
        return Err(AppError::NotFound);
    }
    let email = form.email.trim().to_ascii_lowercase();
    let problem = if mailstore::Address::parse(&email).is_err() {
        Some("Enter an e-mail address, like admin@example.net.")
    } else if form.password.chars().count() < 12 {
        Some("Use a password of at least 12 characters.")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Ok(form_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            SigninPage {
                pre: random_token(),
                email,
                error: Some(problem.into()),
                bootstrap: Some(token),
            },
        ));
    }
    let password = form.password;
    let hash = tokio::task::spawn_blocking(move || tenancy::hash_password(password.as_bytes()))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let id = state.store.add_admin(&email, &hash, &Scope::All).await?;
    *state.bootstrap.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let ip = req_ip.0.map(|ip| ip.to_string()).unwrap_or_default();
    record(&state, &email, "admin.bootstrap", &ip, true).await;
    start_session(&state, id).await
}

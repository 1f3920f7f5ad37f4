//! Sign-in, sign-out and the one-time bootstrap link that creates the first super admin.
//!
//! The sign-in form is protected by a double-submit token (a random cookie echoed in a hidden
//! field) since there is no session yet to hold a CSRF token; the `Origin` check of
//! `auth::browser` applies too.
//!
//! Failed sign-ins count in the store (shared by every process) per (client network, account)
//! and per client network, never per account alone: a network that did nothing wrong is never
//! refused, so no one can lock an admin out by failing on their behalf. Each attempt is
//! audited, but failures only within `AuditBudget`, so a flood of them cannot fill the log.
//!
//! The users' self-service sign-in (`pages::me`) is held to the same rules through the same
//! pieces: `pre_ok`, `Throttle`, `Attempt` and `clip_actor`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::CookieJar;
use mailstore::{AdminId, AuditEntry, AuthAttempt, DomainName};
use serde::Deserialize;

use crate::auth::{self, ClientIp, hash_secret, random_token, secrets_equal};
use crate::error::AppError;
use crate::provision::{self, Actor, Audit};
use crate::state::{AppState, SIGNIN_FAILURES_PER_ADDRESS};

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

/// The sign-in form of the admin pages and of the self-service pages alike.
#[derive(Deserialize)]
pub(crate) struct SigninForm {
    #[serde(default)]
    pub(crate) email: String,
    #[serde(default)]
    pub(crate) password: String,
    #[serde(default)]
    pub(crate) _pre: String,
}

/// The form, with a fresh double-submit token.
fn form_page(status: StatusCode, page: SigninPage) -> Response {
    let jar = CookieJar::new().add(auth::cookie(PRE_COOKIE, page.pre.clone()));
    (status, jar, page).into_response()
}

fn pre_ok(jar: &CookieJar, sent: &str) -> bool {
    pre_cookie_ok(jar, PRE_COOKIE, sent)
}

/// Whether a sign-in form's double-submit token `sent` matches the cookie `name`.
pub(crate) fn pre_cookie_ok(jar: &CookieJar, name: &str, sent: &str) -> bool {
    jar.get(name)
        .is_some_and(|c| !sent.is_empty() && secrets_equal(c.value(), sent))
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
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY
        .get_or_init(|| tenancy::hash_password(b"pophost admin dummy password").unwrap_or_default())
}

async fn submit(
    State(state): State<AppState>,
    jar: CookieJar,
    req_ip: ClientIp,
    Form(form): Form<SigninForm>,
) -> Result<Response, AppError> {
    if !pre_ok(&jar, &form._pre) {
        return Err(AppError::Csrf);
    }
    let email = form.email.trim().to_ascii_lowercase();
    let network = network_of(req_ip.0);
    let attempt = Attempt {
        email: &email,
        ip: req_ip.0,
        network: &network,
        object: "admin",
        domain: None,
    };
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
    let throttle = Throttle::count(&state, "admin", &email, &network).await?;
    if throttle.limited {
        attempt.failed(&state).await;
        return Ok(again(
            "Too many failed attempts. Try again in a few minutes.",
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let admin = state.roles.admin.find_admin(&email).await?;
    let hash = admin
        .as_ref()
        .map_or_else(|| dummy_hash().to_string(), |a| a.password_hash.clone());
    let valid = provision::admins::password_matches(hash, form.password).await? && admin.is_some();
    let Some(admin) = admin.filter(|_| valid) else {
        attempt.failed(&state).await;
        return Ok(again("Wrong e-mail or password.", StatusCode::UNAUTHORIZED));
    };
    // Said only to someone who knows the password: it tells a guesser nothing.
    if admin.disabled {
        attempt.refused_disabled(&state).await;
        return Ok(again(
            "This admin account is disabled. Ask a super admin to enable it.",
            StatusCode::FORBIDDEN,
        ));
    }
    throttle.succeeded(&state).await?;
    attempt.succeeded(&state).await;
    let ip = req_ip.0.map(|ip| ip.to_string());
    state
        .roles
        .admin
        .record_admin_signin(admin.id, state.now(), ip.as_deref())
        .await?;
    start_session(&state, admin.id).await
}

/// A new session (a new id at every sign-in: no fixation) and the cookie that carries it.
async fn start_session(state: &AppState, admin: AdminId) -> Result<Response, AppError> {
    let now = state.now();
    let idle = i64::try_from(state.config.session_idle.as_millis()).unwrap_or(i64::MAX);
    let absolute = i64::try_from(state.config.session_absolute.as_millis()).unwrap_or(i64::MAX);
    state
        .roles
        .admin
        .prune_admin_sessions(now.saturating_sub(idle), now.saturating_sub(absolute))
        .await?;
    let id = random_token();
    state
        .roles
        .admin
        .create_admin_session(&hash_secret(&id), admin, &random_token(), now)
        .await?;
    let jar = CookieJar::new()
        .add(auth::cookie(auth::SESSION_COOKIE, id))
        .add(auth::expired(PRE_COOKIE));
    Ok((jar, Redirect::to("/")).into_response())
}

/// The unit of sign-in throttling for a client address (`ip:unknown` without one).
pub(crate) fn network_of(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "ip:unknown".into(), tenancy::network_key)
}

/// A sign-in attempt counted against the brute-force limits: per (client network, account) and,
/// `SIGNIN_FAILURES_PER_ADDRESS` times higher, per network. `kind` keeps the admins' and the
/// users' counters apart (`admin`, `me`), so neither form can lock out the other's accounts.
pub(crate) struct Throttle {
    counted: AuthAttempt,
    pair: String,
    /// Too many failures before this attempt: refuse it without checking the password.
    pub(crate) limited: bool,
}

impl Throttle {
    /// Counts the attempt, before its check (as POP3 logins are), so guesses sent at once see
    /// each other.
    pub(crate) async fn count(
        state: &AppState,
        kind: &str,
        account: &str,
        network: &str,
    ) -> Result<Self, AppError> {
        let keys = [
            format!("{kind}{network}"),
            format!("{kind}:{}|{network}", clip_actor(account)),
        ];
        let limits = [
            state.config.signin_failures * SIGNIN_FAILURES_PER_ADDRESS,
            state.config.signin_failures,
        ];
        let (counted, counts) = state
            .roles
            .directory
            .count_auth_attempt(&keys, FAILURE_WINDOW)
            .await?;
        // Each count includes this attempt; the limits are on the failures before it.
        let limited = counts.iter().zip(limits).any(|(&n, limit)| n > limit);
        let [_, pair] = keys;
        Ok(Self {
            counted,
            pair,
            limited,
        })
    }

    /// A success is no failure, and clears its (address, account) pair.
    pub(crate) async fn succeeded(self, state: &AppState) -> Result<(), AppError> {
        state
            .roles
            .directory
            .forget_auth_attempt(&self.counted, std::slice::from_ref(&self.pair))
            .await?;
        Ok(())
    }
}

/// The longest actor the audit log takes from an unauthenticated form: 254 bytes, the longest
/// address (RFC 5321's 256-octet path less its angle brackets).
const MAX_ACTOR_BYTES: usize = 254;

/// What an unauthenticated client typed, made safe to keep: control characters replaced (no
/// forged line in a log viewer) and cut to `MAX_ACTOR_BYTES` on a character boundary.
pub(crate) fn clip_actor(typed: &str) -> String {
    let mut out = String::new();
    for c in typed.chars() {
        let c = if c.is_control() { '\u{fffd}' } else { c };
        if out.len() + c.len_utf8() > MAX_ACTOR_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// A sign-in attempt, as the audit log records it: there is no `Actor` yet.
pub(crate) struct Attempt<'a> {
    /// The actor as the log names it: what was typed (clipped on writing).
    pub(crate) email: &'a str,
    pub(crate) ip: Option<IpAddr>,
    /// `tenancy::network_key` of `ip`: the unit of throttling and of the audit budget.
    pub(crate) network: &'a str,
    /// What signs in: `admin`, or `self-service` for a user.
    pub(crate) object: &'static str,
    /// The domain of the account, when the attempt named one (a user's).
    pub(crate) domain: Option<DomainName>,
}

impl Attempt<'_> {
    pub(crate) async fn failed(&self, state: &AppState) {
        let (write, suppressed) = state.signin_audit.admit(self.network, state.now());
        summarize(state, suppressed).await;
        if write {
            self.record(state, "signin", false).await;
        }
    }

    pub(crate) async fn succeeded(&self, state: &AppState) {
        let suppressed = state.signin_audit.roll(state.now());
        summarize(state, suppressed).await;
        self.record(state, "signin", true).await;
    }

    /// The right password for a disabled account: always recorded (no one can flood this
    /// without the password), with the reason.
    async fn refused_disabled(&self, state: &AppState) {
        let mut entry = self.entry("signin", false);
        entry.after = Some(serde_json::json!({ "reason": "disabled" }).to_string());
        write_audit(state, entry).await;
    }

    fn entry(&self, action: &str, success: bool) -> AuditEntry {
        AuditEntry {
            at: 0,
            actor: clip_actor(self.email),
            action: action.into(),
            object: self.object.into(),
            domain: self.domain.clone(),
            before: None,
            after: None,
            ip: self.ip.map(|ip| ip.to_string()),
            success,
        }
    }

    async fn record(&self, state: &AppState, action: &str, success: bool) {
        write_audit(state, self.entry(action, success)).await;
    }
}

/// The one row standing for the failed sign-ins of the last minute the log did not take.
async fn summarize(state: &AppState, suppressed: u64) {
    if suppressed == 0 {
        return;
    }
    tracing::warn!(
        suppressed,
        "failed admin sign-ins left out of the audit log in the last minute"
    );
    write_audit(
        state,
        AuditEntry {
            at: 0,
            actor: "pophost".into(),
            action: "signin.suppressed".into(),
            object: "admin".into(),
            domain: None,
            before: None,
            after: Some(
                serde_json::json!({ "failed_signins_not_recorded": suppressed }).to_string(),
            ),
            ip: None,
            success: false,
        },
    )
    .await;
}

async fn write_audit(state: &AppState, entry: AuditEntry) {
    if let Err(e) = state.roles.admin.record_audit(&entry).await {
        tracing::error!(error = %e, action = %entry.action, "audit record not written");
    }
}

/// Failed sign-ins the audit log takes per client network per minute.
pub const AUDIT_FAILURES_PER_NETWORK: u32 = 10;
/// ... and from all networks together, so many networks cannot fill it either (and the budget's
/// own memory stays this small).
pub const AUDIT_FAILURES_PER_MINUTE: u32 = 100;
const AUDIT_WINDOW_MS: i64 = 60_000;

/// How many failed sign-ins the audit log still takes this minute, and how many it did not.
#[derive(Debug, Default)]
pub struct AuditBudget(Mutex<BudgetWindow>);

#[derive(Debug, Default)]
struct BudgetWindow {
    start: i64,
    written: u32,
    per_network: HashMap<String, u32>,
    suppressed: u64,
}

impl AuditBudget {
    /// Whether a failed sign-in from `network` at `now` (Unix ms) is written; and how many the
    /// minute before left out, when this one starts a new minute (to be written as one row).
    fn admit(&self, network: &str, now: i64) -> (bool, u64) {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let suppressed = w.roll(now);
        // An entry per network only once it is written: the map holds at most the global cap.
        let write = w.written < AUDIT_FAILURES_PER_MINUTE && {
            let n = w.per_network.entry(network.to_string()).or_default();
            *n += 1;
            *n <= AUDIT_FAILURES_PER_NETWORK
        };
        if write {
            w.written += 1;
        } else {
            w.suppressed += 1;
        }
        (write, suppressed)
    }

    /// Starts a new minute if this one is over; returns what the old one left out.
    fn roll(&self, now: i64) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).roll(now)
    }
}

impl BudgetWindow {
    fn roll(&mut self, now: i64) -> u64 {
        // A clock that went back starts a new minute too.
        if now >= self.start && now - self.start < AUDIT_WINDOW_MS {
            return 0;
        }
        let suppressed = self.suppressed;
        *self = BudgetWindow {
            start: now,
            ..BudgetWindow::default()
        };
        suppressed
    }
}

async fn signout(
    State(state): State<AppState>,
    actor: Actor,
    jar: CookieJar,
) -> Result<Response, AppError> {
    if let Some(id) = jar.get(auth::SESSION_COOKIE) {
        let id_hash = hash_secret(id.value());
        state.roles.admin.delete_admin_session(&id_hash).await?;
    }
    actor
        .audit(&state.roles, Audit::new("signout", "admin", None))
        .await;
    let jar = jar.add(auth::expired(auth::SESSION_COOKIE));
    Ok((jar, Redirect::to("/signin")).into_response())
}

/// The armed bootstrap token, if `token` is it and there is still no admin.
async fn bootstrap_armed(state: &AppState, token: &str) -> Result<bool, AppError> {
    let armed = state
        .bootstrap
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let matches = armed.is_some_and(|a| secrets_equal(&a, token));
    Ok(matches && state.roles.admin.count_admins().await? == 0)
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
    jar: CookieJar,
    req_ip: ClientIp,
    Form(form): Form<SigninForm>,
) -> Result<Response, AppError> {
    if !pre_ok(&jar, &form._pre) {
        return Err(AppError::Csrf);
    }
    if !bootstrap_armed(&state, &token).await? {
        return Err(AppError::NotFound);
    }
    let email = form.email.trim().to_ascii_lowercase();
    let id = match provision::bootstrap_admin(&state.roles, &email, form.password, req_ip.0).await {
        Ok(id) => id,
        Err(provision::Error::Invalid(problem)) => {
            return Ok(form_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                SigninPage {
                    pre: random_token(),
                    email,
                    error: Some(problem),
                    bootstrap: Some(token),
                },
            ));
        }
        Err(e) => return Err(e.into()),
    };
    *state.bootstrap.lock().unwrap_or_else(|e| e.into_inner()) = None;
    start_session(&state, id).await
}

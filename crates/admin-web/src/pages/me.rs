//! The users' self-service page (`/me`, issue 22 item 2): a user signs in with their address
//! and main password and manages their own mailbox (see `provision::self_service`).
//!
//! It shares the admin UI's rules, not its sessions. Sign-in is the admin sign-in's: a
//! double-submit token, the `Origin` check, the same brute-force throttle and audit budget
//! (`pages::signin`), counted under their own keys. A signed-in user holds a session in its own
//! table under its own cookie (`ME_COOKIE`): the admin middleware reads only the admin cookie
//! and this one only its own, so neither session ever reaches the other's pages. Every
//! state-changing request carries the session's CSRF token, checked in `session`.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar};
use mailstore::BinSelection;
use serde::Deserialize;

use crate::auth::{self, ClientIp, client_ip, hash_secret, origin_ok, random_token};
use crate::error::AppError;
use crate::flash::{self, Flash};
use crate::pages::signin::{Attempt, SigninForm, Throttle, network_of, pre_cookie_ok};
use crate::pages::{human_bytes, human_time};
use crate::password::PasswordFor;
use crate::provision::activity::LoginJson;
use crate::provision::bin::deleted_by;
use crate::provision::self_service::{self as ops, Me};
use crate::state::AppState;

/// A user's session cookie: `__Host-` like the admin's, under another name.
pub const ME_COOKIE: &str = "__Host-pophost-me";
/// The double-submit cookie of the user sign-in form.
const PRE_COOKIE: &str = "__Host-pophost-me-pre";
/// The throttle's counters for user sign-ins (the admins' are `admin…`).
const THROTTLE_KIND: &str = "me";
/// The audit log's object for a user's sign-in and sign-out.
const OBJECT: &str = "self-service";
/// The most bin entries the page lists.
const BIN_ROWS: u64 = 200;

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/me", get(overview))
        .route("/me/signin", get(signin_form).post(signin))
        .route("/me/signout", post(signout))
        .route("/me/password", post(change_password))
        .route("/me/bin", get(bin))
        .route("/me/bin/restore", post(restore))
        .route("/me/app-passwords", post(add_app_password))
        .route("/me/app-passwords/revoke", post(revoke_app_password))
        .layer(from_fn_with_state(state.clone(), session))
}

/// A signed-in user's request: who, and what its pages need.
#[derive(Debug, Clone)]
pub struct MeSession {
    pub me: Me,
    csrf: String,
    /// The hash of the session's id, to end it at sign-out.
    id_hash: String,
    flash: Option<Flash>,
}

/// What the page layout needs.
pub struct MeChrome {
    pub address: String,
    pub csrf: String,
    pub flash: Option<Flash>,
}

impl From<&MeSession> for MeChrome {
    fn from(s: &MeSession) -> Self {
        Self {
            address: s.me.address.to_string(),
            csrf: s.csrf.clone(),
            flash: s.flash.clone(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MeSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        parts
            .extensions
            .get::<MeSession>()
            .cloned()
            .ok_or_else(|| Redirect::to("/me/signin").into_response())
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for MeSession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<MeSession>().cloned())
    }
}

/// For the `/me` routes: loads the user's session (ending it when idle or too old) and checks
/// `Origin` and the form's `_csrf` on every state-changing request, as `auth::browser` does
/// for admins. Requests without a session go on without one (the sign-in form needs none;
/// every other handler's `MeSession` extractor sends them to it).
async fn session(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let ip = client_ip(&state, req.headers(), req.extensions());
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD);
    if unsafe_method && !origin_ok(&state, req.headers()) {
        return Err(AppError::Csrf);
    }
    let Some(mut session) = load_session(&state, req.headers(), ip).await? else {
        return Ok(next.run(req).await);
    };
    session.flash = Flash::from_headers(req.headers());
    let had_flash = session.flash.is_some();
    let (mut parts, body) = req.into_parts();
    let body = if unsafe_method {
        crate::auth::csrf_checked(&parts, body, &session.csrf).await?
    } else {
        body
    };
    parts.extensions.insert(session);
    let mut res = next.run(Request::from_parts(parts, body)).await;
    flash::clear_if_shown(had_flash, &mut res);
    Ok(res)
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn load_session(
    state: &AppState,
    headers: &HeaderMap,
    ip: Option<std::net::IpAddr>,
) -> Result<Option<MeSession>, AppError> {
    let jar = CookieJar::from_headers(headers);
    let Some(id) = jar.get(ME_COOKIE).map(Cookie::value) else {
        return Ok(None);
    };
    let id_hash = hash_secret(id);
    let Some(session) = state.roles.self_service.user_session(&id_hash).await? else {
        return Ok(None);
    };
    let now = state.now();
    if now.saturating_sub(session.last_seen) > millis(state.config.session_idle)
        || now.saturating_sub(session.created_at) > millis(state.config.session_absolute)
    {
        state
            .roles
            .self_service
            .delete_user_session(&id_hash)
            .await?;
        return Ok(None);
    }
    state
        .roles
        .self_service
        .touch_user_session(&id_hash, now)
        .await?;
    Ok(Some(MeSession {
        me: Me {
            user: session.user,
            address: session.address,
            ip,
        },
        csrf: session.csrf,
        id_hash,
        flash: None,
    }))
}

// ---------------------------------------------------------------------------------------------
// Sign-in and sign-out.

#[derive(Template, WebTemplate)]
#[template(path = "me_signin.html")]
struct SigninPage {
    pre: String,
    email: String,
    error: Option<String>,
}

/// The form, with a fresh double-submit token.
fn form_page(status: StatusCode, email: String, error: Option<&str>) -> Response {
    let page = SigninPage {
        pre: random_token(),
        email,
        error: error.map(Into::into),
    };
    let jar = CookieJar::new().add(auth::cookie(PRE_COOKIE, page.pre.clone()));
    (status, jar, page).into_response()
}

async fn signin_form(session: Option<MeSession>) -> Response {
    if session.is_some() {
        return Redirect::to("/me").into_response();
    }
    form_page(StatusCode::OK, String::new(), None)
}

/// The one answer to every failed sign-in, whatever failed (no such user, the domain's page
/// off, a wrong password): a prober learns nothing from it.
const WRONG: &str = "Wrong e-mail address or password.";

async fn signin(
    State(state): State<AppState>,
    jar: CookieJar,
    req_ip: ClientIp,
    Form(form): Form<SigninForm>,
) -> Result<Response, AppError> {
    if !pre_cookie_ok(&jar, PRE_COOKIE, &form._pre) {
        return Err(AppError::Csrf);
    }
    let typed = form.email.trim().to_string();
    let address = ops::mailbox(&state.roles, &typed).await?;
    // The resolved mailbox, so every form of one login counts against one account.
    let account = address
        .as_ref()
        .map_or_else(|| typed.to_lowercase(), ToString::to_string);
    let network = network_of(req_ip.0);
    let actor = format!("user:{account}");
    let attempt = Attempt {
        email: &actor,
        ip: req_ip.0,
        network: &network,
        object: OBJECT,
        domain: address.as_ref().map(|a| a.domain.clone()),
    };
    let throttle = Throttle::count(&state, THROTTLE_KIND, &account, &network).await?;
    if throttle.limited {
        attempt.failed(&state).await;
        return Ok(form_page(
            StatusCode::TOO_MANY_REQUESTS,
            typed,
            Some("Too many failed attempts. Try again in a few minutes."),
        ));
    }
    let user = ops::check_password(&state.roles, address.as_ref(), form.password).await?;
    let Some(user) = user else {
        attempt.failed(&state).await;
        return Ok(form_page(StatusCode::UNAUTHORIZED, typed, Some(WRONG)));
    };
    throttle.succeeded(&state).await?;
    attempt.succeeded(&state).await;
    let jar = start_session(&state, user.id)
        .await?
        .add(auth::expired(PRE_COOKIE));
    Ok((jar, Redirect::to("/me")).into_response())
}

/// A new session for `user` and the cookie that carries it: a new id at every sign-in (no
/// fixation) and after a password change.
async fn start_session(state: &AppState, user: mailstore::UserId) -> Result<CookieJar, AppError> {
    let now = state.now();
    state
        .roles
        .self_service
        .prune_user_sessions(
            now.saturating_sub(millis(state.config.session_idle)),
            now.saturating_sub(millis(state.config.session_absolute)),
        )
        .await?;
    let id = random_token();
    state
        .roles
        .self_service
        .create_user_session(&hash_secret(&id), user, &random_token(), now)
        .await?;
    Ok(CookieJar::new().add(auth::cookie(ME_COOKIE, id)))
}

async fn signout(State(state): State<AppState>, session: MeSession) -> Result<Response, AppError> {
    state
        .roles
        .self_service
        .delete_user_session(&session.id_hash)
        .await?;
    let actor = session.me.actor();
    let audit = crate::provision::Audit::new("signout", OBJECT, Some(&session.me.address.domain));
    actor.audit(&state.roles, audit).await;
    let jar = CookieJar::new().add(auth::expired(ME_COOKIE));
    Ok((jar, Redirect::to("/me/signin")).into_response())
}

// ---------------------------------------------------------------------------------------------
// The mailbox page.

/// One login, as the page shows it.
struct LoginRow {
    at: String,
    client: String,
    mechanism: String,
    tls: bool,
    success: bool,
    reason: String,
}

/// One app password, as the page lists it.
struct AppPasswordRow {
    label: String,
    created: String,
    last_used: String,
}

/// A new app password, shown on the page that made it and never again.
struct Created {
    label: String,
    password: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "me.html")]
struct OverviewPage {
    chrome: MeChrome,
    min_password: usize,
    logins: Vec<LoginRow>,
    bin_count: u64,
    app_passwords: Vec<AppPasswordRow>,
    created: Option<Created>,
    label_error: Option<String>,
}

async fn overview(State(state): State<AppState>, session: MeSession) -> Result<Response, AppError> {
    render_overview(&state, &session, StatusCode::OK, None, None).await
}

async fn render_overview(
    state: &AppState,
    session: &MeSession,
    status: StatusCode,
    created: Option<Created>,
    label_error: Option<String>,
) -> Result<Response, AppError> {
    let activity = ops::activity(&state.roles, &session.me).await?;
    let logins = activity
        .logins
        .iter()
        .map(LoginJson::from)
        .map(|l| LoginRow {
            at: human_time(l.at),
            client: l.client.unwrap_or_else(|| "-".into()),
            mechanism: l.mechanism,
            tls: l.tls,
            success: l.success,
            reason: l.reason_text.unwrap_or_default(),
        })
        .collect();
    let bin_count = ops::bin_page(&state.roles, &session.me, 0, 0).await?.total;
    let app_passwords = ops::app_passwords(&state.roles, &session.me)
        .await?
        .iter()
        .map(|a| AppPasswordRow {
            label: a.label.clone(),
            created: human_time(a.created_at),
            last_used: match a.last_used_at {
                None => "never".into(),
                Some(at) => {
                    let mut s = human_time(at);
                    if let Some(ip) = &a.last_ip {
                        s.push_str(&format!(" from {ip}"));
                    }
                    if let Some(m) = &a.last_mechanism {
                        s.push_str(&format!(" ({m})"));
                    }
                    s
                }
            },
        })
        .collect();
    let page = OverviewPage {
        chrome: MeChrome::from(session),
        min_password: PasswordFor::Mailbox.min_chars(),
        logins,
        bin_count,
        app_passwords,
        created,
        label_error,
    };
    Ok((status, page).into_response())
}

#[derive(Deserialize)]
struct LabelForm {
    #[serde(default)]
    label: String,
}

/// Makes an app password and shows it on the page this request renders: not through a
/// redirect, whose flash would carry the password in a cookie.
async fn add_app_password(
    State(state): State<AppState>,
    session: MeSession,
    Form(form): Form<LabelForm>,
) -> Result<Response, AppError> {
    match ops::add_app_password(&state.roles, &session.me, &form.label).await {
        Ok(password) => {
            let created = Created {
                label: form.label.trim().to_string(),
                password,
            };
            let mut res =
                render_overview(&state, &session, StatusCode::OK, Some(created), None).await?;
            // The one page that shows the password is kept by no cache.
            res.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            Ok(res)
        }
        Err(
            crate::provision::Error::Invalid(why)
            | crate::provision::Error::Store(mailstore::StoreError::Conflict(why)),
        ) => {
            render_overview(
                &state,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(capitalize(&why)),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

async fn revoke_app_password(
    State(state): State<AppState>,
    session: MeSession,
    Form(form): Form<LabelForm>,
) -> Result<Response, AppError> {
    match ops::revoke_app_password(&state.roles, &session.me, &form.label).await {
        Ok(()) => Ok(flash::done(
            "/me",
            format!("App password \"{}\" revoked.", form.label.trim()),
        )),
        Err(crate::provision::Error::NotFound(_)) => {
            Ok(flash::failed("/me", "No such app password."))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

async fn change_password(
    State(state): State<AppState>,
    session: MeSession,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    if form.password != form.confirm {
        return Ok(flash::failed("/me", "The two new passwords differ."));
    }
    // The current password is a password check like the sign-in's: held to the same throttle,
    // so a session left open does not make a guessing oracle.
    let account = session.me.address.to_string();
    let network = network_of(session.me.ip);
    let throttle = Throttle::count(&state, THROTTLE_KIND, &account, &network).await?;
    if throttle.limited {
        return Ok(flash::failed(
            "/me",
            "Too many failed attempts. Try again in a few minutes.",
        ));
    }
    let changed =
        ops::change_password(&state.roles, &session.me, form.current, form.password).await;
    match changed {
        Ok(()) => {
            throttle.succeeded(&state).await?;
            // The change ended every session of the user, this one too: a new one goes on.
            let jar = start_session(&state, session.me.user).await?;
            let done = flash::done(
                "/me",
                "Password changed. Give your mail programs the new one.",
            );
            Ok((jar, done).into_response())
        }
        Err(crate::provision::Error::Invalid(why)) => Ok(flash::failed("/me", capitalize(&why))),
        Err(e) => Err(e.into()),
    }
}

/// "use a password …" → "Use a password …".
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The recycle bin.

struct BinRow {
    id: i64,
    size: String,
    delivered: String,
    deleted: String,
    by: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "me_bin.html")]
struct BinPage {
    chrome: MeChrome,
    rows: Vec<BinRow>,
    total: u64,
    more: bool,
}

async fn bin(State(state): State<AppState>, session: MeSession) -> Result<Response, AppError> {
    let page = ops::bin_page(&state.roles, &session.me, 0, BIN_ROWS).await?;
    let rows: Vec<BinRow> = page
        .items
        .iter()
        .map(|m| BinRow {
            id: m.id,
            size: human_bytes(m.size),
            delivered: human_time(m.delivered_at),
            deleted: human_time(m.deleted_at),
            by: deleted_by(m),
        })
        .collect();
    Ok(BinPage {
        chrome: MeChrome::from(&session),
        more: page.total > rows.len() as u64,
        total: page.total,
        rows,
    }
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
struct RestoreForm {
    /// `selected` or `all`.
    #[serde(default)]
    mode: String,
    /// Bin entry ids (of this user's bin: the store looks only there).
    #[serde(default)]
    selected: Vec<i64>,
    #[serde(default)]
    as_new: Option<String>,
}

async fn restore(
    State(state): State<AppState>,
    session: MeSession,
    axum_extra::extract::Form(form): axum_extra::extract::Form<RestoreForm>,
) -> Result<Response, AppError> {
    let which = match form.mode.as_str() {
        "all" => BinSelection::All,
        _ if form.selected.is_empty() => {
            return Ok(flash::failed("/me/bin", "Select the messages to restore."));
        }
        _ => BinSelection::Ids(form.selected),
    };
    let as_new = form.as_new.as_deref() == Some("on");
    let report = ops::restore(&state.roles, &session.me, &which, as_new).await?;
    Ok(flash::done(
        "/me/bin",
        format!("{} message(s) restored.", report.restored),
    ))
}

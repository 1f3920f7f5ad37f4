//! Who is asking. `Actor` (from `provision`) is the one extractor every handler takes: it
//! carries the admin's scope, and `Actor::domain` is the one gate from a domain named in a URL,
//! form or JSON body to the store. Browser requests authenticate by session cookie (with a CSRF
//! token and an `Origin` check on every state-changing request); API requests by bearer token
//! only, never by cookie, so a browser cannot be made to call the API on an admin's behalf.

use std::net::IpAddr;

use axum::body::{Body, to_bytes};
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Multipart, Request, State,
};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ClientAddr;
use crate::client::client_address;
use crate::error::{ApiError, AppError};
use crate::flash::Flash;
use crate::provision::Actor;
use crate::state::AppState;

/// The session cookie. `__Host-`: Secure, Path=/, no Domain, so no other host can set it.
pub const SESSION_COOKIE: &str = "__Host-pophost-session";
/// The largest form body the CSRF check reads.
const FORM_LIMIT: usize = 64 * 1024;

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or(AppError::Unauthorized)
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Actor>().cloned())
    }
}

/// The client's address (see `client_ip`).
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(
            state,
            &parts.headers,
            &parts.extensions,
        )))
    }
}

/// What the page layout needs: who is signed in, and the CSRF token for its forms.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub email: String,
    pub is_super: bool,
    pub csrf: String,
    /// What the previous action said (see `flash`).
    pub flash: Option<crate::flash::Flash>,
}

impl From<&Actor> for Chrome {
    fn from(a: &Actor) -> Self {
        Self {
            email: a.name.clone(),
            is_super: a.is_super(),
            csrf: a.csrf.clone().unwrap_or_default(),
            flash: a.flash.clone(),
        }
    }
}

/// Field errors of a form that is shown again (with status 422).
#[derive(Debug, Clone, Default)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A random URL-safe secret (256 bits): session ids, CSRF tokens, API tokens, bootstrap links.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the store keeps of a secret: its SHA-256 (the secrets are random, so no salt or
/// stretching is needed, and a stolen database does not give working sessions or tokens).
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// Equal in constant time.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The client's address: the TCP peer's, or behind a trusted proxy the one it forwarded
/// (`client::client_address`). `None` without connect info (router tests).
pub fn client_ip(state: &AppState, headers: &HeaderMap, extensions: &Extensions) -> Option<IpAddr> {
    let peer = extensions
        .get::<ConnectInfo<ClientAddr>>()
        .map(|ConnectInfo(a)| a.0.ip())?;
    Some(client_address(peer, headers, &state.config.trusted_proxies))
}

/// Cookie `name` with `value`, as every cookie of the admin UI is: `__Host-` (so Secure, Path=/
/// and no Domain), HttpOnly, SameSite=Strict.
pub fn cookie(name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .build()
}

/// Cookie `name` expired, so the browser deletes it. Added to the jar rather than removed from
/// it, so it is sent whether or not the request carried the cookie.
pub fn expired(name: &'static str) -> Cookie<'static> {
    let mut c = cookie(name, String::new());
    c.set_max_age(time::Duration::ZERO);
    c
}

/// For browser routes: loads the session (ending it when idle or too old) and puts the `Actor`
/// in the request; on POST, checks `Origin` and the form's `_csrf` against the session's.
/// Requests without a session go on without an `Actor` (sign-in pages need none; every other
/// handler's `Actor` extractor then redirects to sign-in).
pub async fn browser(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let ip = client_ip(&state, req.headers(), req.extensions());
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD);
    if unsafe_method && !origin_ok(&state, req.headers()) {
        return Err(AppError::Csrf);
    }
    let Some(mut actor) = load_session(&state, req.headers(), ip).await? else {
        return Ok(next.run(req).await);
    };
    actor.flash = Flash::from_headers(req.headers());
    let had_flash = actor.flash.is_some();
    let (mut parts, body) = req.into_parts();
    let body = if unsafe_method {
        csrf_checked(&parts, body, actor.csrf.as_deref().unwrap_or_default()).await?
    } else {
        body
    };
    parts.extensions.insert(actor);
    let mut res = next.run(Request::from_parts(parts, body)).await;
    crate::flash::clear_if_shown(had_flash, &mut res);
    Ok(res)
}

/// A state-changing browser request's body, read within its size limit, once its `_csrf` field
/// matches the session's token `expected` (an empty one matches nothing). The one CSRF check of
/// the admin pages and the self-service pages.
pub(crate) async fn csrf_checked(
    parts: &axum::http::request::Parts,
    body: Body,
    expected: &str,
) -> Result<Body, AppError> {
    // The account import's form carries a whole CSV file; every other form is small.
    let import = parts
        .extensions
        .get::<MatchedPath>()
        .is_some_and(|p| p.as_str() == crate::pages::import::PATH);
    let limit = if import {
        crate::api::IMPORT_LIMIT
    } else {
        FORM_LIMIT
    };
    let bytes = to_bytes(body, limit)
        .await
        .map_err(|_| AppError::BadRequest("form too large".into()))?;
    let sent = if import && is_multipart(&parts.headers) {
        multipart_field(&parts.headers, bytes.clone(), "_csrf").await
    } else {
        form_field(&bytes, "_csrf")
    }
    .unwrap_or_default();
    if expected.is_empty() || !secrets_equal(&sent, expected) {
        return Err(AppError::Csrf);
    }
    Ok(Body::from(bytes))
}

pub(crate) fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("multipart/form-data"))
}

/// The text of the field `name` of a `multipart/form-data` body (a file upload's form).
async fn multipart_field(
    headers: &HeaderMap,
    body: axum::body::Bytes,
    name: &str,
) -> Option<String> {
    let mut req = Request::new(Body::from(body));
    *req.headers_mut() = headers.clone();
    let mut form = Multipart::from_request(req, &()).await.ok()?;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some(name) {
            return field.text().await.ok();
        }
    }
    None
}

/// A state-changing request must come from our own pages. Browsers say where a request comes
/// from in `Sec-Fetch-Site` (which pages cannot forge) and `Origin`; with our `no-referrer`
/// policy a same-origin form POST carries `Origin: null`, so `null` is accepted only when
/// `Sec-Fetch-Site` vouches for it. A client that sends neither (curl, the tests) still needs
/// the CSRF token, and SameSite=Strict keeps the cookie off cross-site requests anyway. Behind
/// a TLS proxy the browser's origin is `https://…` while this listener speaks HTTP, so the
/// configured `admin.public_url` is our origin too.
pub fn origin_ok(state: &AppState, headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if site.is_some_and(|s| s != b"same-origin") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    if origin.as_bytes() == b"null" {
        return site == Some(b"same-origin".as_slice());
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let scheme = if state.config.tls { "https" } else { "http" };
    origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
        || (state.config.public_origin.as_ref())
            .is_some_and(|p| origin.eq_ignore_ascii_case(p.as_str()))
}

/// The first value of `name` in a url-encoded form.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn load_session(
    state: &AppState,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
) -> Result<Option<Actor>, AppError> {
    let jar = CookieJar::from_headers(headers);
    let Some(id) = jar.get(SESSION_COOKIE).map(Cookie::value) else {
        return Ok(None);
    };
    let id_hash = hash_secret(id);
    let Some(session) = state.roles.admin.admin_session(&id_hash).await? else {
        return Ok(None);
    };
    let now = state.now();
    let idle = i64::try_from(state.config.session_idle.as_millis()).unwrap_or(i64::MAX);
    let absolute = i64::try_from(state.config.session_absolute.as_millis()).unwrap_or(i64::MAX);
    if now.saturating_sub(session.last_seen) > idle
        || now.saturating_sub(session.created_at) > absolute
    {
        state.roles.admin.delete_admin_session(&id_hash).await?;
        return Ok(None);
    }
    let Some(admin) = state.roles.admin.admin_by_id(session.admin).await? else {
        return Ok(None);
    };
    // Disabling deletes the sessions too; this covers a session written in between.
    if admin.disabled {
        return Ok(None);
    }
    state.roles.admin.touch_admin_session(&id_hash, now).await?;
    Ok(Some(Actor {
        id: Some(admin.id),
        name: admin.email,
        scope: admin.scope,
        csrf: Some(session.csrf),
        ip,
        flash: None,
    }))
}

/// For `/api/v1`: `Authorization: Bearer <token>` or 401 with a `WWW-Authenticate` challenge
/// (RFC 6750 §3: `error="invalid_token"` when a token was sent but is not valid).
pub async fn api(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
    else {
        return Ok(api_unauthorized("Bearer"));
    };
    let holder = state
        .roles
        .admin
        .use_api_token(&hash_secret(token), state.now())
        .await?;
    let admin = match holder {
        Some(h) => state.roles.admin.admin_by_id(h.admin).await?,
        None => None,
    };
    // The store already refuses a disabled admin's tokens; checked again on the account read.
    let (Some(holder), Some(admin)) = (holder, admin.filter(|a| !a.disabled)) else {
        return Ok(api_unauthorized("Bearer error=\"invalid_token\""));
    };
    if holder.read_only && !matches!(*req.method(), Method::GET | Method::HEAD) {
        let body = serde_json::json!({ "error": "this API token is read-only" });
        return Ok((axum::http::StatusCode::FORBIDDEN, axum::Json(body)).into_response());
    }
    let ip = client_ip(&state, req.headers(), req.extensions());
    req.extensions_mut().insert(Actor {
        id: Some(admin.id),
        name: admin.email,
        scope: admin.scope,
        csrf: None,
        ip,
        flash: None,
    });
    Ok(next.run(req).await)
}

/// The token of an `Authorization` value: the scheme is case-insensitive (RFC 7235 §2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// 401 for the API is JSON, not a redirect, and says how to authenticate.
pub fn api_unauthorized(challenge: &'static str) -> Response {
    let mut res = ApiError(AppError::Unauthorized).into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static(challenge),
    );
    res
}

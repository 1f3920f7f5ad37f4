//! A store in a temporary directory, the app on it, admins signed in by a session row written
//! straight to the store, and request helpers for forms and JSON.

use std::sync::Arc;

use admin_web::auth::{SESSION_COOKIE, hash_secret};
use admin_web::{AppState, WebConfig, system_clock};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use mailstore::{Address, Admin, AdminId, Directory, DomainName, SqliteStore, UserDetail};
use serde_json::Value;
use tower::ServiceExt;

pub struct Env {
    pub app: Router,
    pub store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

/// A signed-in browser: its session cookie and CSRF token.
#[derive(Clone)]
pub struct Browser {
    pub cookie: String,
    pub csrf: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    #[track_caller]
    pub fn assert_redirect(&self, to: &str) {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "body: {}", self.body);
        assert_eq!(self.location(), to);
    }
}

pub fn domain(s: &str) -> DomainName {
    DomainName::parse(s).expect("domain name")
}

pub fn addr(s: &str) -> Address {
    Address::parse(s).expect("address")
}

impl Env {
    pub async fn new() -> Self {
        Self::with(WebConfig::default(), system_clock()).await
    }

    /// An app with these settings and this clock.
    pub async fn with(config: WebConfig, clock: admin_web::Clock) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("store.db"), Default::default(), true)
            .await
            .expect("open store");
        let store = Arc::new(store);
        let state = AppState::new(admin_web::Roles::of(store.clone()), config, clock);
        Self {
            app: admin_web::app(state),
            store,
            _dir: dir,
        }
    }

    /// An environment with two domains, `a.test` and `b.test`.
    pub async fn with_domains() -> Self {
        let env = Self::new().await;
        for d in ["a.test", "b.test"] {
            env.store.add_domain(&domain(d)).await.expect("add domain");
        }
        env
    }

    pub async fn add_admin(&self, email: &str, scope: mailstore::Scope) -> AdminId {
        let hash = tenancy::hash_password(b"admin password").expect("hash");
        self.store
            .add_admin(email, &hash, &scope)
            .await
            .expect("add admin")
    }

    pub async fn sign_in(&self, admin: AdminId) -> Browser {
        let id = admin_web::auth::random_token();
        let csrf = admin_web::auth::random_token();
        self.store
            .create_admin_session(&hash_secret(&id), admin, &csrf, now())
            .await
            .expect("session");
        Browser {
            cookie: format!("{SESSION_COOKIE}={id}"),
            csrf,
        }
    }

    pub async fn super_admin(&self) -> Browser {
        let id = self
            .add_admin("root@admin.test", mailstore::Scope::All)
            .await;
        self.sign_in(id).await
    }

    /// A domain admin of `a.test`.
    pub async fn domain_admin(&self) -> Browser {
        let id = self
            .add_admin(
                "tenant@admin.test",
                mailstore::Scope::Domains(vec![domain("a.test")]),
            )
            .await;
        self.sign_in(id).await
    }

    pub async fn token(&self, admin: AdminId) -> String {
        let token = admin_web::auth::random_token();
        self.store
            .add_api_token(admin, "test", &hash_secret(&token), now())
            .await
            .expect("token");
        token
    }

    pub async fn user(&self, address: &str) -> Option<UserDetail> {
        self.store
            .user_detail(&addr(address))
            .await
            .expect("user detail")
    }

    pub async fn add_user(&self, address: &str) {
        self.store
            .add_user(&addr(address), "$argon2id$v=19$m=19456,t=2,p=1$x$y", None)
            .await
            .expect("add user");
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, b: &Browser, path: &str) -> Reply {
        let req = Request::get(path)
            .header(header::COOKIE, &b.cookie)
            .body(Body::empty())
            .expect("request");
        self.send(req).await
    }

    /// Follows a redirect as a browser does, sending back the cookies it set (the flash).
    pub async fn follow(&self, b: &Browser, reply: &Reply) -> Reply {
        let mut cookie = b.cookie.clone();
        for set in reply.headers.get_all(header::SET_COOKIE) {
            let set = set.to_str().expect("cookie");
            let pair = set.split(';').next().unwrap_or_default();
            cookie = format!("{cookie}; {pair}");
        }
        let req = Request::get(reply.location())
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .expect("request");
        self.send(req).await
    }

    /// Posts a form with the session's CSRF token added.
    pub async fn post(&self, b: &Browser, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("_csrf", &b.csrf);
        for (k, v) in fields {
            form.append_pair(k, v);
        }
        let req = Request::post(path)
            .header(header::COOKIE, &b.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.finish()))
            .expect("request");
        self.send(req).await
    }

    pub async fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        self.send(req).await
    }

    /// The audit log's actions, oldest first.
    pub async fn audit_actions(&self) -> Vec<String> {
        let page = self
            .store
            .audit_page(&mailstore::Scope::All, &Default::default(), 0, 1000)
            .await
            .expect("audit page");
        page.items.into_iter().rev().map(|e| e.action).collect()
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The text of the `<p class="field-error" id="error-FIELD">`, if the page shows one.
pub fn field_error(body: &str, field: &str) -> Option<String> {
    let open = format!("<p class=\"field-error\" id=\"error-{field}\">");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find("</p>")?;
    Some(body[start..start + end].to_string())
}

//! The authorization matrix: every endpoint × every kind of caller × an object in domain A or B,
//! each case on a fresh store, compared with what the roles allow. A listing "reaches" an object
//! when the object shows in it; any other endpoint reaches it when it answers with success.
//! The test fails on any unexpected allow and on any unexpected deny.

use std::sync::{Arc, OnceLock};

use admin_web::auth::{SESSION_COOKIE, hash_secret, random_token};
use admin_web::{AppState, WebConfig, system_clock};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use mailstore::{Address, Admin, AuditEntry, Directory, DomainName, Maildrops, Scope, SqliteStore};
use tower::ServiceExt;

const A: &str = "alpha.test";
const B: &str = "beta.test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Super,
    AdminA,
    AdminB,
    Anonymous,
    /// Only admin A's API token, on every endpoint.
    TokenA,
    /// Admin A's browser session cookie used on the API (which reads no cookies).
    CookieAOnApi,
}

const CALLERS: [Caller; 6] = [
    Caller::Super,
    Caller::AdminA,
    Caller::AdminB,
    Caller::Anonymous,
    Caller::TokenA,
    Caller::CookieAOnApi,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Any signed-in admin; the object does not matter (the dashboard, own tokens).
    SignedIn,
    /// An admin whose scope holds the object's domain.
    Scope,
    /// A super admin.
    Super,
    /// A listing: every signed-in admin may call it, and it shows objects in scope only.
    Listing,
}

struct Endpoint {
    api: bool,
    method: Method,
    /// `{d}` is the object's domain.
    path: &'static str,
    /// Form fields (pages) or a JSON body (API); `{d}` as above.
    body: &'static str,
    need: Need,
    /// What shows in a listing when the object is visible.
    marker: &'static str,
}

const fn page(method: Method, path: &'static str, body: &'static str, need: Need) -> Endpoint {
    Endpoint {
        api: false,
        method,
        path,
        body,
        need,
        marker: "",
    }
}

const fn api(method: Method, path: &'static str, body: &'static str, need: Need) -> Endpoint {
    Endpoint {
        api: true,
        method,
        path,
        body,
        need,
        marker: "",
    }
}

const fn listing(api: bool, path: &'static str, marker: &'static str) -> Endpoint {
    Endpoint {
        api,
        method: Method::GET,
        path,
        body: "",
        need: Need::Listing,
        marker,
    }
}

fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    use Need::*;
    vec![
        page(M::GET, "/", "", SignedIn),
        page(M::GET, "/tokens", "", SignedIn),
        page(M::POST, "/tokens", "name=matrix", SignedIn),
        // The link to the domain, not its name: a search echoes the name it was given.
        listing(false, "/domains", "href=\"/domains/{d}\""),
        listing(false, "/domains?q={d}", "href=\"/domains/{d}\""),
        listing(false, "/sessions", "u@{d}"),
        listing(false, "/audit", "marker.{d}"),
        page(M::GET, "/domains/new", "", Super),
        page(M::POST, "/domains", "name=new.test", Super),
        page(M::GET, "/domains/{d}", "", Scope),
        page(
            M::POST,
            "/domains/{d}",
            "quota_bytes=1M&quota_messages=&max_users=&login_forms=at&enabled=on",
            Super,
        ),
        page(M::POST, "/domains/{d}/aliases", "alias=other.{d}", Super),
        page(M::POST, "/domains/{d}/aliases/alias.{d}/delete", "", Super),
        page(M::GET, "/domains/{d}/delete", "", Super),
        page(M::POST, "/domains/{d}/delete", "force=on", Super),
        page(M::GET, "/domains/{d}/policies", "", Scope),
        page(
            M::POST,
            "/domains/{d}/policies",
            "quota_warn_percent=80&retention_days=30&login_delay_secs=",
            Super,
        ),
        page(M::GET, "/domains/{d}/oauth", "", Scope),
        page(
            M::POST,
            "/domains/{d}/oauth",
            "issuer=i&jwks=https%3A%2F%2Fid.{d}%2Fk&audience=a",
            Scope,
        ),
        page(M::POST, "/domains/{d}/oauth/clear", "", Scope),
        page(M::GET, "/domains/{d}/users", "", Scope),
        page(M::GET, "/domains/{d}/users?q=u", "", Scope),
        page(M::GET, "/domains/{d}/users/new", "", Scope),
        page(
            M::POST,
            "/domains/{d}/users",
            "local=new&password=long+enough+pw&quota_bytes=&quota_messages=",
            Scope,
        ),
        page(
            M::POST,
            "/domains/{d}/users/bulk",
            "action=disable&selected=u",
            Scope,
        ),
        page(
            M::POST,
            "/domains/{d}/users/bulk",
            "action=delete&selected=u",
            Scope,
        ),
        page(M::GET, "/domains/{d}/users/u", "", Scope),
        page(
            M::POST,
            "/domains/{d}/users/u",
            "quota_bytes=2M&quota_messages=10",
            Scope,
        ),
        page(
            M::POST,
            "/domains/{d}/users/u/password",
            "password=another+password",
            Scope,
        ),
        page(
            M::POST,
            "/domains/{d}/users/u/enabled",
            "enabled=false",
            Scope,
        ),
        page(M::GET, "/domains/{d}/users/u/delete", "", Scope),
        page(M::POST, "/domains/{d}/users/u/delete", "", Scope),
        page(M::POST, "/sessions/u@{d}/end", "", Scope),
        listing(true, "/api/v1/domains", "\"name\":\"{d}\""),
        listing(true, "/api/v1/sessions", "u@{d}"),
        api(M::POST, "/api/v1/domains", r#"{"name":"new.test"}"#, Super),
        api(M::GET, "/api/v1/domains/{d}", "", Scope),
        api(
            M::PATCH,
            "/api/v1/domains/{d}",
            r#"{"quota_bytes":1000000}"#,
            Super,
        ),
        api(M::DELETE, "/api/v1/domains/{d}?force=true", "", Super),
        api(M::GET, "/api/v1/domains/{d}/policies", "", Scope),
        api(
            M::PATCH,
            "/api/v1/domains/{d}/policies",
            r#"{"retention_days":30}"#,
            Super,
        ),
        api(
            M::PUT,
            "/api/v1/domains/{d}/oauth",
            r#"{"issuer":"i","jwks_url":"https://id.{d}/k","audience":"a"}"#,
            Scope,
        ),
        // A key file on the server's disk is the operator's to name.
        api(
            M::PUT,
            "/api/v1/domains/{d}/oauth",
            r#"{"issuer":"i","jwks_file":"/etc/jwks.json","audience":"a"}"#,
            Super,
        ),
        api(M::GET, "/api/v1/domains/{d}/users", "", Scope),
        api(
            M::POST,
            "/api/v1/domains/{d}/users",
            r#"{"local":"new","password":"long enough pw"}"#,
            Scope,
        ),
        api(M::GET, "/api/v1/domains/{d}/users/u", "", Scope),
        api(
            M::PATCH,
            "/api/v1/domains/{d}/users/u",
            r#"{"quota_bytes":1000000,"enabled":false}"#,
            Scope,
        ),
        api(M::DELETE, "/api/v1/domains/{d}/users/u", "", Scope),
        api(M::DELETE, "/api/v1/sessions/u@{d}", "", Scope),
    ]
}

/// Whether `caller` may reach an object in `domain` through `e`.
fn expected(e: &Endpoint, caller: Caller, domain: &str) -> bool {
    let (is_super, scope) = match caller {
        Caller::Anonymous => return false,
        Caller::TokenA if !e.api => return false,
        Caller::CookieAOnApi if e.api => return false,
        Caller::Super => (true, None),
        Caller::AdminA | Caller::TokenA | Caller::CookieAOnApi => (false, Some(A)),
        Caller::AdminB => (false, Some(B)),
    };
    let in_scope = is_super || scope == Some(domain);
    match e.need {
        Need::SignedIn => true,
        Need::Super => is_super,
        Need::Scope | Need::Listing => in_scope,
    }
}

fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| tenancy::hash_password(b"admin password").expect("hash"))
}

struct World {
    app: axum::Router,
    super_cookie: String,
    super_token: String,
    a_cookie: String,
    a_token: String,
    b_cookie: String,
    b_token: String,
    _dir: tempfile::TempDir,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Two domains, each with user `u` (whose maildrop is locked by a live session), an alias and an
/// audit entry; a super admin and an admin of each domain, each with a session and a token.
async fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("store.db"), Default::default(), true)
            .await
            .expect("open"),
    );
    for d in [A, B] {
        let name = DomainName::parse(d).expect("domain");
        store.add_domain(&name).await.expect("domain");
        let alias = DomainName::parse(&format!("alias.{d}")).expect("alias");
        store.add_alias(&alias, &name).await.expect("alias");
        let user = Address::parse(&format!("u@{d}")).expect("address");
        let id = store.add_user(&user, hash(), None).await.expect("user");
        store.lock(id).await.expect("lock");
        store
            .record_audit(&AuditEntry {
                at: 0,
                actor: "setup".into(),
                action: "test.marker".into(),
                object: format!("marker.{d}"),
                domain: Some(name),
                before: None,
                after: None,
                ip: None,
                success: true,
            })
            .await
            .expect("audit");
    }
    let mut creds = Vec::new();
    for (email, scope) in [
        ("root@ops.example", Scope::All),
        (
            "alice@ops.example",
            Scope::Domains(vec![DomainName::parse(A).expect("a")]),
        ),
        (
            "bob@ops.example",
            Scope::Domains(vec![DomainName::parse(B).expect("b")]),
        ),
    ] {
        let id = store.add_admin(email, hash(), &scope).await.expect("admin");
        let session = random_token();
        store
            .create_admin_session(&hash_secret(&session), id, "csrf-token", now())
            .await
            .expect("session");
        let token = random_token();
        store
            .add_api_token(id, "matrix", &hash_secret(&token), now())
            .await
            .expect("token");
        creds.push((format!("{SESSION_COOKIE}={session}"), token));
    }
    let state = AppState::new(
        admin_web::Roles::of(store),
        WebConfig::default(),
        system_clock(),
    );
    let mut creds = creds.into_iter();
    let (super_cookie, super_token) = creds.next().expect("super");
    let (a_cookie, a_token) = creds.next().expect("a");
    let (b_cookie, b_token) = creds.next().expect("b");
    World {
        app: admin_web::app(state),
        super_cookie,
        super_token,
        a_cookie,
        a_token,
        b_cookie,
        b_token,
        _dir: dir,
    }
}

/// Sends `e` as `caller` for an object in `domain`; true when it reached the object.
async fn reached(e: &Endpoint, caller: Caller, domain: &str) -> Result<bool, String> {
    let w = world().await;
    let fill = |s: &str| s.replace("{d}", domain);
    let mut req = Request::builder()
        .method(e.method.clone())
        .uri(fill(e.path));
    let (cookie, token) = match caller {
        Caller::Super => (Some(&w.super_cookie), Some(&w.super_token)),
        Caller::AdminA => (Some(&w.a_cookie), Some(&w.a_token)),
        Caller::AdminB => (Some(&w.b_cookie), Some(&w.b_token)),
        Caller::Anonymous => (None, None),
        Caller::TokenA => (None, Some(&w.a_token)),
        Caller::CookieAOnApi => (Some(&w.a_cookie), None),
    };
    // Each channel uses its own credential: cookies for pages, tokens for the API.
    if e.api {
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if caller == Caller::CookieAOnApi {
            req = req.header(header::COOKIE, cookie.expect("cookie"));
        }
    } else {
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        if caller == Caller::TokenA {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", w.a_token));
        }
    }
    let body = if e.api {
        req = req.header(header::CONTENT_TYPE, "application/json");
        fill(e.body)
    } else if e.method == Method::POST {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        let fields = fill(e.body);
        if fields.is_empty() {
            "_csrf=csrf-token".to_string()
        } else {
            format!("{fields}&_csrf=csrf-token")
        }
    } else {
        String::new()
    };
    let res = w
        .app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible");
    let status = res.status();
    let location = res
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let denied = matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
    ) || (status == StatusCode::SEE_OTHER && location == "/signin");
    if denied {
        return Ok(false);
    }
    if !(status.is_success() || status.is_redirection()) {
        return Err(format!(
            "{status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    Ok(match e.need {
        Need::Listing => text.contains(&fill(e.marker)),
        _ => true,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_every_caller_both_tenants() {
    let endpoints = endpoints();
    let mut cases = 0;
    let mut failures = Vec::new();
    let (mut unexpected_allows, mut unexpected_denies) = (0, 0);
    for e in &endpoints {
        for caller in CALLERS {
            for domain in [A, B] {
                cases += 1;
                let want = expected(e, caller, domain);
                match reached(e, caller, domain).await {
                    Ok(got) if got == want => {}
                    Ok(got) => {
                        if got {
                            unexpected_allows += 1;
                        } else {
                            unexpected_denies += 1;
                        }
                        failures.push(format!(
                            "{} {} as {caller:?} on {domain}: {} (expected {})",
                            e.method,
                            e.path,
                            if got { "allowed" } else { "denied" },
                            if want { "allowed" } else { "denied" },
                        ));
                    }
                    Err(error) => failures.push(format!(
                        "{} {} as {caller:?} on {domain}: {error}",
                        e.method, e.path
                    )),
                }
            }
        }
    }
    println!(
        "authorization matrix: {} endpoints x {} callers x 2 tenants = {cases} cases; \
         {unexpected_allows} unexpected allows, {unexpected_denies} unexpected denies",
        endpoints.len(),
        CALLERS.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(cases, endpoints.len() * CALLERS.len() * 2);
}

//! OAuth 2.0 bearer-token logins (issue 22, item 3): SASL `OAUTHBEARER` (RFC 7628) and
//! `XOAUTH2` (Google's and Microsoft's), for POP3 and the MTA's auth service alike.
//!
//! The client names a login (OAUTHBEARER's GS2 `a=`, XOAUTH2's `user=`); it is resolved like a
//! password login (aliases, login forms), counted and slowed by the same brute-force defence, and
//! its domain's settings (`mailstore::OAuthConfig`) say whose tokens count. A token is a signed
//! JWT: its `alg` must be one the domain allows (never `none`, never HMAC: with a public key as
//! the "secret" anyone could sign), its `kid` a key of the domain's JWKS, its signature good, `iss`
//! the issuer, `aud` the audience, `exp`/`nbf` current within `LEEWAY_SECS`, and the mailbox claim
//! (`email` by default) must name the same mailbox as the login. Every refusal reads the same to
//! the client (`invalid_token`); the reason goes to the log (never the token).
//!
//! Key sets come from a file (read at each login: small, and an edit takes effect at once) or a
//! URL, fetched over HTTP(S) and kept for the `max-age` of its `Cache-Control` (clamped to
//! `MIN_CACHE`..`MAX_CACHE`, `DEFAULT_CACHE` without one); a token with a `kid` the cached set
//! lacks (the provider rotated its keys) fetches anew, at most once per `REFETCH_EVERY` per URL,
//! so made-up `kid`s cannot make pophost hammer the provider. When a fetch fails, the keys
//! fetched last still serve, and the next try waits `REFETCH_EVERY` too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::Jwk};
use mailstore::{FailureReason, JwksSource, JwtAlgorithm, OAuthConfig, OAuthSettings};

use crate::{AuthError, Authenticated, Authenticator, LoginContext};

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// How long a fetched key set is kept without a `Cache-Control: max-age`.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(300);
/// The least a key set is kept, whatever its `max-age` (`no-cache` included): a login each
/// second must not be a fetch each second.
pub const MIN_CACHE: Duration = Duration::from_secs(30);
/// The most a key set is kept: a revoked key goes within a day whatever the provider says.
pub const MAX_CACHE: Duration = Duration::from_secs(86_400);
/// An unknown `kid` fetches the key set anew at most this often per URL.
pub const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// A key set larger than this is refused (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 1 << 20;
/// A fetch that takes longer fails (and the login with it, unless older keys are cached).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest token taken; real ones are 1–4 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A bearer-token SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerMechanism {
    /// RFC 7628.
    OAuthBearer,
    /// Google's and Microsoft's `XOAUTH2`.
    XOAuth2,
}

impl BearerMechanism {
    pub const ALL: [BearerMechanism; 2] = [BearerMechanism::OAuthBearer, BearerMechanism::XOAuth2];

    pub fn name(self) -> &'static str {
        match self {
            BearerMechanism::OAuthBearer => "OAUTHBEARER",
            BearerMechanism::XOAuth2 => "XOAUTH2",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Splits the client's message into the login and the token.
    pub fn parse_message(self, message: &[u8]) -> Result<BearerMessage, BearerFailure> {
        match self {
            BearerMechanism::OAuthBearer => parse_oauthbearer(message),
            BearerMechanism::XOAuth2 => parse_xoauth2(message),
        }
        .ok_or(BearerFailure::InvalidRequest)
    }

    /// The error the server sends as its last challenge before failing the exchange (RFC 7628
    /// §3.2.2; XOAUTH2 sends Google's form, HTTP status as a string). The client answers with a
    /// dummy response (`AQ==` for OAUTHBEARER, an empty one for XOAUTH2), then gets the failure.
    pub fn error_challenge(self, failure: BearerFailure) -> Vec<u8> {
        let json = match (self, failure) {
            (BearerMechanism::OAuthBearer, BearerFailure::InvalidToken) => {
                r#"{"status":"invalid_token","schemes":"bearer"}"#
            }
            (BearerMechanism::OAuthBearer, BearerFailure::InvalidRequest) => {
                r#"{"status":"invalid_request","schemes":"bearer"}"#
            }
            (BearerMechanism::XOAuth2, BearerFailure::InvalidToken) => {
                r#"{"status":"401","schemes":"bearer"}"#
            }
            (BearerMechanism::XOAuth2, BearerFailure::InvalidRequest) => {
                r#"{"status":"400","schemes":"bearer"}"#
            }
        };
        json.as_bytes().to_vec()
    }
}

/// What a bearer-token login failed with, as the client is told (RFC 7628 §3.2.2 `status`). An
/// unknown user, a domain without OAuth and every bad token read the same `invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerFailure {
    /// The SASL message itself is malformed.
    InvalidRequest,
    InvalidToken,
}

/// The client's login and bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerMessage {
    pub login: String,
    pub token: String,
}

impl std::fmt::Debug for BearerMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerMessage")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// RFC 7628 §3.1: `gs2-header kvsep *(kvpair kvsep) kvsep`, the GS2 header being
/// `n|y "," "a=" saslname ","` (`p=` channel binding is not offered, so not accepted; the
/// authzid is required, as it names the mailbox).
fn parse_oauthbearer(message: &[u8]) -> Option<BearerMessage> {
    let text = std::str::from_utf8(message).ok()?;
    let (gs2, rest) = text.split_once('\x01')?;
    let mut fields = gs2.splitn(3, ',');
    let (Some(flag), Some(authzid), Some("")) = (fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    if !matches!(flag, "n" | "y") {
        return None;
    }
    let login = saslname(authzid.strip_prefix("a=")?)?;
    let pairs = rest
        .strip_suffix("\x01\x01")
        .or_else(|| rest.strip_suffix('\x01'))?;
    let token = pairs
        .split('\x01')
        .find_map(|pair| pair.strip_prefix("auth="))
        .and_then(bearer)?;
    Some(BearerMessage { login, token })
}

/// `user=` {login} `^Aauth=Bearer ` {token} `^A^A`.
fn parse_xoauth2(message: &[u8]) -> Option<BearerMessage> {
    let text = std::str::from_utf8(message).ok()?;
    let text = text
        .strip_suffix("\x01\x01")
        .or_else(|| text.strip_suffix('\x01'))?;
    let mut login = None;
    let mut token = None;
    for pair in text.split('\x01') {
        if let Some(user) = pair.strip_prefix("user=") {
            login = Some(user.to_string());
        } else if let Some(auth) = pair.strip_prefix("auth=") {
            token = bearer(auth);
        }
    }
    let login = login.filter(|l| !l.is_empty())?;
    Some(BearerMessage {
        login,
        token: token?,
    })
}

/// `Bearer <token>` (the scheme is case-insensitive, RFC 6750 §2.1).
fn bearer(auth: &str) -> Option<String> {
    let (scheme, token) = auth.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_BYTES)
        .then(|| token.to_string())
}

/// RFC 5801 saslname: `=2C` is `,`, `=3D` is `=`, any other `=` is malformed.
fn saslname(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

/// Why a token was refused, for the log; the client only ever sees `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("no key with this kid")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("the mailbox claim is missing or names another mailbox")]
    Mailbox,
    #[error("the domain has no OAuth settings")]
    NotConfigured,
    #[error("the domain's keys cannot be had: {0}")]
    Keys(String),
}

/// One verification key of a key set.
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    decoding: DecodingKey,
}

/// A domain's keys: RSA, EC P-256 and Ed25519 public keys only. Symmetric (`oct`) keys are
/// dropped at parsing, so no HMAC check can ever be made with anything from a JWKS.
#[derive(Clone, Default)]
pub struct KeySet(Vec<Key>);

impl KeySet {
    /// Parses a JWKS document, skipping keys that are symmetric, for encryption, or of a type
    /// this version does not know (a provider may publish those beside the signing keys).
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys = doc
            .keys
            .into_iter()
            .filter(|k| {
                matches!(
                    k.get("kty").and_then(|t| t.as_str()),
                    Some("RSA" | "EC" | "OKP")
                )
            })
            .filter(|k| {
                k.get("use")
                    .and_then(|u| u.as_str())
                    .is_none_or(|u| u == "sig")
            })
            .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
            .filter_map(|jwk| {
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    decoding: DecodingKey::from_jwk(&jwk).ok()?,
                })
            })
            .collect();
        Ok(KeySet(keys))
    }

    /// The key a token's `kid` names; without a `kid`, the only key there is.
    fn find(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        match kid {
            Some(kid) => self.0.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.0.len() == 1 => self.0.first(),
            None => None,
        }
        .map(|k| &k.decoding)
    }

    fn has(&self, kid: Option<&str>) -> bool {
        self.find(kid).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn jose(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Es256 => Algorithm::ES256,
        JwtAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

/// The `alg` and `kid` of a token's header, read by hand so that any `alg` (`none` and `HS256`
/// included) is named and refused here, before any key is chosen.
fn header(token: &str) -> Result<(String, Option<String>), TokenError> {
    let head = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or(TokenError::Malformed)?;
    let kid = header.get("kid").and_then(|k| k.as_str()).map(String::from);
    Ok((alg.to_string(), kid))
}

/// Checks a token against a domain's settings and keys; the mailbox claim's value on success.
/// Pure but for the clock (`jsonwebtoken` reads the system time).
pub fn verify(token: &str, config: &OAuthConfig, keys: &KeySet) -> Result<String, TokenError> {
    let (alg, kid) = header(token)?;
    let alg = JwtAlgorithm::parse(&alg)
        .filter(|a| config.algorithms.contains(a))
        .ok_or(TokenError::Algorithm)?;
    let key = keys.find(kid.as_deref()).ok_or(TokenError::UnknownKey)?;
    let mut validation = Validation::new(jose(alg));
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data =
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                // A key of another family than the alg (an RSA key for ES256).
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Algorithm
                }
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidAudience => TokenError::Audience,
                _ => TokenError::Malformed,
            })?;
    data.claims
        .get(&config.claim)
        .and_then(|v| v.as_str())
        .map(String::from)
        .ok_or(TokenError::Mailbox)
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<bytes::Bytes>,
>;

/// One URL's key set: the one fetched last and until when it is good, and when a fetch was
/// last tried (successful or not).
#[derive(Default)]
struct Slot {
    keys: Option<(KeySet, Instant)>,
    tried: Option<Instant>,
}

/// The domains' key sets by URL (see the module docs). Each URL has a lock of its own, held
/// during its fetch: logins arriving meanwhile wait for that fetch instead of fetching too, and
/// a slow provider holds up its own domains' logins only, never another tenant's.
pub struct Jwks {
    http: HttpClient,
    cache: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl Jwks {
    /// Fails only if ring offered no TLS version, which it does: at start-up, not at a login.
    pub fn new() -> Result<Self, rustls::Error> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
            .https_or_http()
            .enable_http1()
            .build();
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(Self {
            http,
            cache: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The keys of `source` that can check a token with `kid`.
    pub async fn keys(&self, source: &JwksSource, kid: Option<&str>) -> Result<KeySet, TokenError> {
        match source {
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| TokenError::Keys(format!("reading {path}: {e}")))?;
                KeySet::parse(&bytes).map_err(TokenError::Keys)
            }
            JwksSource::Url(url) => self.url_keys(url, kid).await,
        }
    }

    async fn url_keys(&self, url: &str, kid: Option<&str>) -> Result<KeySet, TokenError> {
        let slot = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(url.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        let now = Instant::now();
        let fresh = slot
            .keys
            .as_ref()
            .is_some_and(|(keys, until)| now < *until && keys.has(kid));
        // Stale keys, or a kid they lack, fetch anew: at most once per REFETCH_EVERY, whether
        // the last try worked or not, so neither made-up kids nor a provider that is down make
        // every login a fetch.
        let may_fetch = slot
            .tried
            .is_none_or(|t| now.duration_since(t) >= REFETCH_EVERY);
        if fresh || !may_fetch {
            return match &slot.keys {
                Some((keys, _)) => Ok(keys.clone()),
                None => Err(TokenError::Keys(
                    "the last fetch failed; retrying soon".into(),
                )),
            };
        }
        slot.tried = Some(now);
        match self.fetch(url).await {
            Ok((keys, max_age)) => {
                let age = max_age.unwrap_or(DEFAULT_CACHE).clamp(MIN_CACHE, MAX_CACHE);
                tracing::info!(
                    url,
                    keys = keys.len(),
                    cache_secs = age.as_secs(),
                    "JWKS fetched"
                );
                metrics::counter!("pophost_jwks_fetches_total", "outcome" => "ok").increment(1);
                slot.keys = Some((keys.clone(), now + age));
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(url, error = %e, "fetching the JWKS failed");
                metrics::counter!("pophost_jwks_fetches_total", "outcome" => "error").increment(1);
                // The provider is down: the keys we had still check tokens.
                match &slot.keys {
                    Some((keys, _)) => Ok(keys.clone()),
                    None => Err(TokenError::Keys(e)),
                }
            }
        }
    }

    /// GETs a key set; its `Cache-Control: max-age`, if any.
    async fn fetch(&self, url: &str) -> Result<(KeySet, Option<Duration>), String> {
        let request = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(bytes::Bytes::new()))
            .map_err(|e| format!("bad URL: {e}"))?;
        let fetch = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP status {}", response.status()));
            }
            let max_age = response
                .headers()
                .get_all(http::header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(max_age);
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            Ok((KeySet::parse(&body)?, max_age))
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| "timed out".to_string())?
    }
}

/// `max-age` of one `Cache-Control` value; `no-cache`/`no-store` count as 0 (then clamped up to
/// `MIN_CACHE`).
pub fn max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|d| {
        let d = d.to_ascii_lowercase();
        if d == "no-cache" || d == "no-store" {
            return Some(Duration::ZERO);
        }
        d.strip_prefix("max-age=")
            .and_then(|n| n.trim_matches('"').parse::<u64>().ok())
            .map(Duration::from_secs)
    })
}

/// What an `Authenticator` needs for bearer tokens: the domains' settings and their keys.
pub struct OAuth {
    settings: Arc<dyn OAuthSettings>,
    jwks: Jwks,
}

impl OAuth {
    pub fn new(settings: Arc<dyn OAuthSettings>) -> Result<Self, rustls::Error> {
        Ok(Self {
            settings,
            jwks: Jwks::new()?,
        })
    }
}

impl Authenticator {
    /// Accepts bearer tokens of the identity providers the domains name.
    pub fn with_oauth(mut self, oauth: OAuth) -> Self {
        self.oauth = Some(Arc::new(oauth));
        self
    }

    /// Whether some domain has OAuth on: CAPA and the MTA's `MECH` lines offer the bearer
    /// mechanisms only then. Asked of the store each time (one indexed row read).
    pub async fn oauth_offered(&self) -> bool {
        match &self.oauth {
            Some(oauth) => oauth.settings.oauth_anywhere().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "asking whether OAuth is configured failed");
                false
            }),
            None => false,
        }
    }

    /// A bearer-token login (OAUTHBEARER, XOAUTH2): counted and slowed like a password login;
    /// a refusal waits the failure delay and is `Bearer(status)` for the client's error
    /// challenge.
    pub async fn authenticate_bearer(
        &self,
        message: &BearerMessage,
        ctx: &LoginContext,
    ) -> Result<Authenticated, BearerError> {
        let Some(oauth) = &self.oauth else {
            return Err(BearerError::Rejected(BearerFailure::InvalidToken));
        };
        let attempt = self.begin(&message.login, ctx).await?;
        let checked = self.check_bearer(oauth, &attempt, message, ctx).await;
        match checked {
            Ok(who) => {
                self.succeeded(&attempt).await;
                Ok(who)
            }
            Err(Checked::Unavailable(e)) => {
                // Not the client's fault: no failure counted against the account beyond the
                // attempt itself, and the client is told to try later.
                Err(BearerError::Auth(AuthError::Unavailable(e)))
            }
            Err(Checked::Refused(reason)) => {
                tracing::info!(reason = %reason, "bearer token refused");
                let recorded = match reason {
                    TokenError::NotConfigured => FailureReason::MechanismNotAllowed,
                    _ => FailureReason::Other("bad_token".into()),
                };
                self.failed(&attempt, recorded).await;
                Err(BearerError::Rejected(BearerFailure::InvalidToken))
            }
        }
    }

    async fn check_bearer(
        &self,
        oauth: &OAuth,
        attempt: &crate::Attempt,
        message: &BearerMessage,
        ctx: &LoginContext,
    ) -> Result<Authenticated, Checked> {
        let Some(address) = &attempt.address else {
            return Err(Checked::Refused(TokenError::Mailbox));
        };
        let config = oauth
            .settings
            .oauth_settings(&address.domain)
            .await
            .map_err(Checked::Unavailable)?
            .ok_or(Checked::Refused(TokenError::NotConfigured))?;
        let (_, kid) = header(&message.token).map_err(Checked::Refused)?;
        let keys = oauth
            .jwks
            .keys(&config.jwks, kid.as_deref())
            .await
            .map_err(Checked::Refused)?;
        let claimed = verify(&message.token, &config, &keys).map_err(Checked::Refused)?;
        // The claim names a mailbox as a login would (an alias domain, another case): it must
        // be the one the login resolved to.
        let named = self.mailbox(&claimed, ctx).await.map_err(|e| match e {
            AuthError::Unavailable(e) => Checked::Unavailable(e),
            _ => Checked::Refused(TokenError::Mailbox),
        })?;
        if named.address.as_ref() != Some(address) {
            return Err(Checked::Refused(TokenError::Mailbox));
        }
        let user = self
            .directory
            .find_user(address)
            .await
            .map_err(Checked::Unavailable)?
            // Unknown or disabled: the store records which.
            .ok_or(Checked::Refused(TokenError::Mailbox))?;
        Ok(Authenticated {
            user: user.id,
            address: address.clone(),
        })
    }
}

enum Checked {
    Refused(TokenError),
    Unavailable(mailstore::StoreError),
}

/// Why a bearer-token login failed.
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    /// Refused: the status goes into the error challenge.
    #[error("bearer token refused")]
    Rejected(BearerFailure),
    /// As for password logins (the store is unavailable, the mailbox is moving).
    #[error(transparent)]
    Auth(#[from] AuthError),
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

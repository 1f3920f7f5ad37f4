//! OAuth 2.0 sign-in settings of a domain (issue 22, item 3): the identity provider whose bearer
//! tokens log the domain's users in over POP3 and SMTP AUTH (`tenancy::oauth` checks them). For
//! the domain page, the API (`/api/v1/domains/{d}/oauth`) and `pophost domain oauth`. Setting
//! and clearing are audited (`domain.oauth.set`, `domain.oauth.clear`).
//!
//! Who may set what: an admin of the domain may name its provider, with its keys at an `https`
//! URL; a key file on the server, or a plain `http` URL, only a super admin or the command line
//! may name (a file path reads the server's disk, and an `http` URL on an internal network is
//! for the operator to choose, not a tenant).

use mailstore::{DEFAULT_CLAIM, DomainName, JwksSource, JwtAlgorithm, OAuthConfig};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Actor, Audit, Error, Roles};

/// A domain's OAuth settings, as the API takes and returns them and the audit log records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OAuthJson {
    /// The `iss` a token must carry, exactly.
    pub issuer: String,
    /// Where the signing keys (JWKS) are fetched; exactly one of `jwks_url` and `jwks_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// A JWKS file on the server (super admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// A value the token's `aud` must contain.
    pub audience: String,
    /// The claim naming the mailbox (default `email`).
    #[serde(default = "default_claim")]
    pub claim: String,
    /// Accepted signature algorithms, a subset of RS256, ES256 and EdDSA (default all three).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
}

fn default_claim() -> String {
    DEFAULT_CLAIM.into()
}

fn default_algorithms() -> Vec<String> {
    JwtAlgorithm::ALL
        .iter()
        .map(|a| a.as_str().to_string())
        .collect()
}

impl From<&OAuthConfig> for OAuthJson {
    fn from(c: &OAuthConfig) -> Self {
        let (jwks_url, jwks_file) = match &c.jwks {
            JwksSource::Url(u) => (Some(u.clone()), None),
            JwksSource::File(f) => (None, Some(f.clone())),
        };
        Self {
            issuer: c.issuer.clone(),
            jwks_url,
            jwks_file,
            audience: c.audience.clone(),
            claim: c.claim.clone(),
            algorithms: c
                .algorithms
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
        }
    }
}

impl OAuthJson {
    /// Checks the settings (and what this actor may name) and turns them into the store's form.
    pub fn parse(&self, actor: &Actor) -> Result<OAuthConfig, Error> {
        let text = |name: &str, value: &str| {
            let value = value.trim();
            if value.is_empty() || value.len() > 2048 || value.chars().any(char::is_control) {
                Err(Error::Invalid(format!(
                    "{name}: must be 1 to 2048 printable characters"
                )))
            } else {
                Ok(value.to_string())
            }
        };
        let jwks = match (&self.jwks_url, &self.jwks_file) {
            (Some(url), None) => {
                let url = text("jwks_url", url)?;
                let uri: axum::http::Uri = url
                    .parse()
                    .map_err(|_| Error::Invalid("jwks_url: not a URL".into()))?;
                match uri.scheme_str() {
                    Some("https") => {}
                    Some("http") if actor.is_super() => {}
                    Some("http") => {
                        return Err(Error::Invalid(
                            "jwks_url: only a super admin may name an http URL; use https".into(),
                        ));
                    }
                    _ => return Err(Error::Invalid("jwks_url: must be an https URL".into())),
                }
                if uri.host().is_none() {
                    return Err(Error::Invalid("jwks_url: no host".into()));
                }
                JwksSource::Url(url)
            }
            (None, Some(file)) => {
                actor.require_super()?;
                let file = text("jwks_file", file)?;
                if !std::path::Path::new(&file).is_absolute() {
                    return Err(Error::Invalid("jwks_file: must be an absolute path".into()));
                }
                JwksSource::File(file)
            }
            _ => {
                return Err(Error::Invalid(
                    "give exactly one of jwks_url and jwks_file".into(),
                ));
            }
        };
        let algorithms = JwtAlgorithm::parse_list(&self.algorithms.join(","))
            .map_err(|e| Error::Invalid(format!("algorithms: {e}")))?;
        Ok(OAuthConfig {
            issuer: text("issuer", &self.issuer)?,
            jwks,
            audience: text("audience", &self.audience)?,
            claim: text("claim", &self.claim)?,
            algorithms,
        })
    }
}

/// The domain's settings; `None` where OAuth is off.
pub async fn get(
    roles: &Roles,
    actor: &Actor,
    domain: &DomainName,
) -> Result<Option<OAuthJson>, Error> {
    super::domain(roles, actor, domain).await?;
    Ok(roles
        .oauth
        .oauth_settings(domain)
        .await?
        .as_ref()
        .map(OAuthJson::from))
}

/// Sets (or replaces) the domain's settings; what is stored.
pub async fn set(
    roles: &Roles,
    actor: &Actor,
    domain: &DomainName,
    input: &OAuthJson,
) -> Result<OAuthJson, Error> {
    super::domain(roles, actor, domain).await?;
    let config = input.parse(actor)?;
    let before = roles.oauth.oauth_settings(domain).await?;
    roles.oauth.set_oauth_settings(domain, &config).await?;
    let after = OAuthJson::from(&config);
    let object = domain.to_string();
    let mut record = Audit::new("domain.oauth.set", &object, Some(domain)).after(&after);
    if let Some(before) = &before {
        record = record.before(OAuthJson::from(before));
    }
    actor.audit(roles, record).await;
    Ok(after)
}

/// Turns OAuth off for the domain; false if it was not on.
pub async fn clear(roles: &Roles, actor: &Actor, domain: &DomainName) -> Result<bool, Error> {
    super::domain(roles, actor, domain).await?;
    let Some(before) = roles.oauth.oauth_settings(domain).await? else {
        return Ok(false);
    };
    let cleared = roles.oauth.clear_oauth_settings(domain).await?;
    if cleared {
        let object = domain.to_string();
        actor
            .audit(
                roles,
                Audit::new("domain.oauth.clear", &object, Some(domain))
                    .before(OAuthJson::from(&before)),
            )
            .await;
    }
    Ok(cleared)
}

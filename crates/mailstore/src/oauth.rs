//! OAuth 2.0 sign-in settings per domain (issue 22, item 3): which identity provider's bearer
//! tokens log a domain's users in over POP3 and SMTP AUTH. The store only keeps them; the token
//! checks are `tenancy::oauth`'s. The types cannot express what must never be accepted: an
//! algorithm is one of RS256, ES256 and EdDSA (no `none`, no HMAC, whose "secret" would be the
//! provider's public key), and the key set comes from exactly one place.

use async_trait::async_trait;

use crate::{DomainName, Result};

/// A signature algorithm a domain may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    Rs256,
    Es256,
    EdDsa,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 3] = [
        JwtAlgorithm::Rs256,
        JwtAlgorithm::Es256,
        JwtAlgorithm::EdDsa,
    ];

    /// The name as JOSE spells it (the `alg` header).
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
            JwtAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// Exactly the JOSE names above; anything else (`none`, `HS256`, `rs256`) is refused.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// A comma-separated list (`RS256,ES256`), as the CLI takes it and the store keeps it;
    /// empty, unknown or repeated names are an error naming the culprit.
    pub fn parse_list(list: &str) -> std::result::Result<Vec<Self>, String> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim) {
            let alg = Self::parse(name).ok_or_else(|| {
                format!("unsupported algorithm {name:?} (allowed: RS256, ES256, EdDSA)")
            })?;
            if out.contains(&alg) {
                return Err(format!("algorithm {name} listed twice"));
            }
            out.push(alg);
        }
        Ok(out)
    }

    pub fn join(list: &[Self]) -> String {
        list.iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Where a domain's signing keys (a JWKS document, RFC 7517 §5) come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// Fetched over HTTP(S) and cached as its `Cache-Control` allows.
    Url(String),
    /// Read from a file on the frontend's disk (an air-gapped provider, or tests).
    File(String),
}

/// One domain's OAuth settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The `iss` a token must carry, exactly.
    pub issuer: String,
    pub jwks: JwksSource,
    /// A value the token's `aud` must contain.
    pub audience: String,
    /// The claim naming the mailbox (`email` by default).
    pub claim: String,
    /// Never empty.
    pub algorithms: Vec<JwtAlgorithm>,
}

/// The claim that names the mailbox unless a domain says otherwise.
pub const DEFAULT_CLAIM: &str = "email";

#[async_trait]
pub trait OAuthSettings: Send + Sync {
    /// The settings of a domain (its canonical name), `None` where OAuth is off.
    async fn oauth_settings(&self, domain: &DomainName) -> Result<Option<OAuthConfig>>;
    /// Sets (or replaces) a domain's settings; `NotFound` for no such domain.
    async fn set_oauth_settings(&self, domain: &DomainName, config: &OAuthConfig) -> Result<()>;
    /// Turns OAuth off for a domain; false if it was not on.
    async fn clear_oauth_settings(&self, domain: &DomainName) -> Result<bool>;
    /// Whether any domain has OAuth on: what CAPA asks before it lists the bearer mechanisms.
    async fn oauth_anywhere(&self) -> Result<bool>;
}

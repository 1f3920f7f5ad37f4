//! What the API returns and takes, and what the audit log records before and after a change:
//! one shape per object, so an API client and an auditor read the same fields. The OpenAPI
//! document's schemas are derived from these types (a field that may be null is still always
//! sent, hence `required`).

use mailstore::{DomainDetail, DomainName, DomainPolicies, LiveSession, LoginForm, UserDetail};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::limit::{LimitError, Unit, parse_limit};

/// A domain.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Domain)]
pub struct DomainJson {
    pub name: String,
    /// Byte quota; null is unlimited.
    #[schema(required = true)]
    pub quota_bytes: Option<u64>,
    /// Message quota; null is unlimited.
    #[schema(required = true)]
    pub quota_messages: Option<u64>,
    pub used_bytes: u64,
    pub used_messages: u64,
    pub users: u64,
    /// Most users; null is unlimited.
    #[schema(required = true)]
    pub max_users: Option<u64>,
    /// The login forms the domain accepts: `at` (john@example.com), `percent`
    /// (john%example.com), `plus` (john+example.com), `bare` (john).
    #[schema(value_type = Vec<LoginFormName>)]
    pub login_forms: Vec<&'static str>,
    pub allow_apop: bool,
    pub enabled: bool,
    pub aliases: Vec<String>,
    /// The old POP3 server of a domain in migration mode; null otherwise.
    #[schema(required = true)]
    pub migrate_from: Option<String>,
    /// Users whose mail has been pulled from the old server.
    pub migrated_users: u64,
    /// Days a deleted message stays in its user's recycle bin; 0: deletes are final.
    pub bin_days: u32,
    /// Whether messages in the recycle bin count against quota.
    pub bin_counts_quota: bool,
    /// Whether the domain's users may sign in to the self-service page (`/me`).
    pub self_service: bool,
    /// Whether only app passwords log in over POP3 and the MTA's auth service.
    pub app_passwords_only: bool,
}

/// The name of a login form.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = LoginForm)]
pub enum LoginFormName {
    At,
    Percent,
    Plus,
    Bare,
}

impl From<&DomainDetail> for DomainJson {
    fn from(d: &DomainDetail) -> Self {
        Self {
            name: d.name.to_string(),
            quota_bytes: d.quota.bytes,
            quota_messages: d.quota.messages,
            used_bytes: d.usage.bytes,
            used_messages: d.usage.messages,
            users: d.users,
            max_users: d.max_users,
            login_forms: LoginForm::ALL
                .into_iter()
                .filter(|f| d.login_forms.allows(*f))
                .map(LoginForm::name)
                .collect(),
            allow_apop: d.allow_apop,
            enabled: d.enabled,
            aliases: d.aliases.iter().map(DomainName::to_string).collect(),
            migrate_from: d.migrate_from.clone(),
            migrated_users: d.migrated_users,
            bin_days: d.bin.days,
            bin_counts_quota: d.bin.counts_quota,
            self_service: d.self_service,
            app_passwords_only: d.app_passwords_only,
        }
    }
}

/// How `password_scheme` names pophost's own hashes.
pub const OWN_SCHEME: &str = "ARGON2ID";

/// A user (no password material).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserJson {
    pub address: String,
    pub local: String,
    pub domain: String,
    /// Byte quota; null is unlimited.
    #[schema(required = true)]
    pub quota_bytes: Option<u64>,
    /// Message quota; null is unlimited.
    #[schema(required = true)]
    pub quota_messages: Option<u64>,
    pub used_bytes: u64,
    pub used_messages: u64,
    pub enabled: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The scheme of the password hash: `ARGON2ID` for pophost's own, else the scheme of a
    /// hash imported from another server (`SHA512-CRYPT`, …), until the user's first login
    /// replaces it.
    pub password_scheme: String,
}

impl From<&UserDetail> for UserJson {
    fn from(u: &UserDetail) -> Self {
        Self {
            address: u.address.to_string(),
            local: u.address.local.to_string(),
            domain: u.address.domain.to_string(),
            quota_bytes: u.quota.bytes,
            quota_messages: u.quota.messages,
            used_bytes: u.usage.bytes,
            used_messages: u.usage.messages,
            enabled: u.enabled,
            created_at: u.created_at,
            password_scheme: u
                .password_scheme
                .clone()
                .unwrap_or_else(|| OWN_SCHEME.to_string()),
        }
    }
}

/// A domain's mailbox policies: quota refusal, warning, retention (EXPIRE), LOGIN-DELAY.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = DomainPolicies)]
pub struct PoliciesJson {
    /// Over quota: 452 4.2.2 (retry) instead of 552 5.2.2.
    pub quota_tempfail: bool,
    /// Usage that delivers a one-time warning; null is none.
    #[schema(required = true, minimum = 1, maximum = 100)]
    pub quota_warn_percent: Option<u8>,
    /// Messages older than this are deleted (CAPA EXPIRE); null is never.
    #[schema(required = true, minimum = 1, maximum = 36500)]
    pub retention_days: Option<u32>,
    /// Least time between POP3 logins (CAPA LOGIN-DELAY); null is none.
    #[schema(required = true, minimum = 1, maximum = 31536000)]
    pub login_delay_secs: Option<u32>,
}

impl From<&DomainPolicies> for PoliciesJson {
    fn from(p: &DomainPolicies) -> Self {
        Self {
            quota_tempfail: p.quota_tempfail,
            quota_warn_percent: p.quota_warn_percent,
            retention_days: p.retention_days,
            login_delay_secs: p.login_delay_secs,
        }
    }
}

/// A maildrop locked by a live POP3 session.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionJson {
    pub address: String,
    /// The frontend holding the lock.
    pub node: String,
    /// Unix milliseconds.
    pub since: i64,
    /// The client's address, from the session's login; null when unknown.
    #[schema(required = true)]
    pub client: Option<String>,
    /// Whether the session uses TLS; null when unknown.
    #[schema(required = true)]
    pub tls: Option<bool>,
}

impl From<&LiveSession> for SessionJson {
    fn from(s: &LiveSession) -> Self {
        Self {
            address: s.address.to_string(),
            node: s.node.clone(),
            since: s.since,
            client: s.client.clone(),
            tls: s.tls,
        }
    }
}

/// `?address=…&domain=…` of the live sessions, with paging.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// Part of the mailbox address.
    #[serde(default)]
    pub address: String,
    /// The mailbox's domain (its canonical name), exactly.
    #[serde(default)]
    pub domain: String,
    /// 1-based page number; one past the end gives the last page.
    #[serde(default)]
    #[param(minimum = 1)]
    pub page: Option<u64>,
    /// Items per page (at most 500); the server's page size when absent.
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    pub per_page: Option<u64>,
}

impl SessionQuery {
    pub fn matches(&self, s: &LiveSession) -> bool {
        let address = self.address.trim().to_ascii_lowercase();
        let domain = self
            .domain
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        s.address.to_string().contains(&address)
            && (domain.is_empty() || s.address.domain.as_str() == domain)
    }

    /// The paging part, as a listing's.
    pub fn list(&self) -> ListQuery {
        ListQuery {
            q: String::new(),
            page: self.page,
            per_page: self.per_page,
        }
    }
}

/// A limit as the API takes it: a whole number, or text read by the one limit parser (`"10K"`,
/// `"500M"`, `"unlimited"`), the same as the admin UI's forms and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = Limit)]
pub enum LimitJson {
    /// An exact number of bytes, messages or users.
    Number(u64),
    /// `10K`, `500M`, `2G` (bytes: powers of 1024; counts: powers of 1000), or `unlimited`.
    Text(String),
}

impl LimitJson {
    /// The limit this names; `None` is no limit.
    pub fn value(&self, unit: Unit) -> Result<Option<u64>, LimitError> {
        match self {
            LimitJson::Number(n) => Ok(Some(*n)),
            LimitJson::Text(s) => parse_limit(s, unit),
        }
    }
}

/// `?q=…&page=…` of a listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Substring to search for.
    #[serde(default)]
    pub q: String,
    /// 1-based page number; one past the end gives the last page.
    #[serde(default)]
    #[param(minimum = 1)]
    pub page: Option<u64>,
    /// Items per page (at most 500); the server's page size when absent.
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    pub per_page: Option<u64>,
}

/// The largest page a listing returns.
pub const MAX_PER_PAGE: u64 = 500;

impl ListQuery {
    /// The 1-based page number.
    pub fn page(&self) -> u64 {
        self.page.unwrap_or(1).max(1)
    }

    pub fn offset(&self, page_size: u64) -> u64 {
        (self.page() - 1).saturating_mul(page_size)
    }

    /// The page size asked for, within 1..=`MAX_PER_PAGE`, or `default`.
    pub fn page_size(&self, default: u64) -> u64 {
        self.per_page.unwrap_or(default).clamp(1, MAX_PER_PAGE)
    }

    /// The page asked for, or the last one when that is past the end of `total` items.
    pub fn page_within(&self, total: u64, page_size: u64) -> u64 {
        self.page().min(total.div_ceil(page_size.max(1)).max(1))
    }
}

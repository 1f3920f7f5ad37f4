//! The admin UI's and API's vocabulary: admin accounts and their scope, web sessions, API
//! tokens, the audit log, and the paged views of domains, users, sessions and activity.
//!
//! Tenant isolation starts here: every listing takes a `Scope`, applied in SQL, and the web layer
//! checks single objects against the same `Scope` before it names them to the store.

use crate::{Address, DomainName, LoginForms, Quota, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdminId(pub i64);

/// What an admin may see and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A super admin: every domain, and the service-wide pages.
    All,
    /// A domain admin: only these domains and their users.
    Domains(Vec<DomainName>),
}

impl Scope {
    pub fn allows(&self, domain: &DomainName) -> bool {
        match self {
            Scope::All => true,
            Scope::Domains(list) => list.contains(domain),
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }
}

/// An admin account. `password_hash` is argon2id (PHC string).
#[derive(Clone)]
pub struct AdminAccount {
    pub id: AdminId,
    /// Lower-cased e-mail address; the sign-in name.
    pub email: String,
    pub password_hash: String,
    pub scope: Scope,
}

impl std::fmt::Debug for AdminAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccount")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A signed-in browser session. The cookie carries a random id; the store keeps only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub admin: AdminId,
    /// The CSRF token of every form of this session.
    pub csrf: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub last_seen: i64,
}

/// An API token as listed (the secret itself is shown once, at creation, and stored hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used: Option<i64>,
}

/// One page of a listing, with the total count of matches for the pager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// What the admin UI shows and edits of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDetail {
    pub name: DomainName,
    pub quota: Quota,
    pub usage: Usage,
    pub users: u64,
    /// `None`: no limit on the number of users.
    pub max_users: Option<u64>,
    pub login_forms: LoginForms,
    pub allow_apop: bool,
    /// A disabled domain's users cannot log in (mail is still delivered).
    pub enabled: bool,
    /// Other names of the domain, sorted.
    pub aliases: Vec<DomainName>,
    /// The old POP3 server of a domain in migration mode.
    pub migrate_from: Option<String>,
    /// Users whose mail has been pulled from the old server.
    pub migrated_users: u64,
}

/// The settings the admin UI edits on a domain, all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSettings {
    pub quota: Quota,
    pub max_users: Option<u64>,
    pub login_forms: LoginForms,
    pub enabled: bool,
}

/// What the admin UI shows of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDetail {
    pub address: Address,
    pub quota: Quota,
    pub usage: Usage,
    /// A disabled user cannot log in (mail is still delivered).
    pub enabled: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The scheme of a password hash imported from another server (`SHA512-CRYPT`, …), until
    /// the user's first login replaces it; `None` for pophost's own argon2id.
    pub password_scheme: Option<String>,
}

/// A maildrop locked by a live POP3 session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub address: Address,
    /// The frontend holding the lock (`lock.node`).
    pub node: String,
    /// Unix milliseconds: when the lock was taken.
    pub since: i64,
    /// The client's address and whether it used TLS, from the session's login (`None` when
    /// the login left no record).
    pub client: Option<String>,
    pub tls: Option<bool>,
}

/// One audit-log record: who did what to which object, from where, and whether it worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix milliseconds; set by the store when recording.
    pub at: i64,
    /// The admin's e-mail, `cli` for the command line, or the name tried at a failed sign-in.
    pub actor: String,
    /// Dotted verb, e.g. `domain.create`, `user.password`, `signin`.
    pub action: String,
    /// The object acted on, e.g. `example.com` or `john@example.com`.
    pub object: String,
    /// The domain the object belongs to: domain admins see their domains' entries only.
    pub domain: Option<DomainName>,
    /// JSON of the object before and after the change, where there is one.
    pub before: Option<String>,
    pub after: Option<String>,
    pub ip: Option<String>,
    pub success: bool,
}

/// Narrows the audit log; empty strings match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: String,
    pub action: String,
    pub object: String,
}

/// Activity in one hour: messages delivered and POP3 logins (maildrops opened).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourlyStat {
    /// Unix time / 3600.
    pub hour: i64,
    pub delivered: u64,
    pub logins: u64,
}

/// Service- or tenant-wide totals for the dashboard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub domains: u64,
    pub users: u64,
    pub usage: Usage,
    /// Sum of the domains' byte quotas; `None` when any domain is unlimited.
    pub quota_bytes: Option<u64>,
    pub sessions: u64,
}

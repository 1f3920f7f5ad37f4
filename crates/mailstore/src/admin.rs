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
    /// A disabled admin can neither sign in nor use their API tokens.
    pub disabled: bool,
    /// The last successful sign-in: Unix milliseconds and the client's address.
    pub last_signin_at: Option<i64>,
    pub last_signin_ip: Option<String>,
}

impl std::fmt::Debug for AdminAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccount")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("scope", &self.scope)
            .field("disabled", &self.disabled)
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
    /// Unix milliseconds after which the token no longer works; `None`: never.
    pub expires_at: Option<i64>,
    /// A read-only token may only read (`GET`).
    pub read_only: bool,
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
    /// The recycle bin's settings (`RecycleBin::set_bin_settings` changes them).
    pub bin: crate::BinSettings,
    /// Whether its users may use the self-service page (`SelfService::set_self_service`).
    pub self_service: bool,
    /// Only app passwords log in over POP3 and the MTA's auth service
    /// (`AppPasswords::set_app_passwords_only`).
    pub app_passwords_only: bool,
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

/// An admin as the admin list shows them: the account and how many API tokens they hold.
#[derive(Debug, Clone)]
pub struct AdminListing {
    pub account: AdminAccount,
    pub tokens: u64,
}

/// A new API token's limits, with the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiToken<'a> {
    pub name: &'a str,
    pub token_hash: &'a str,
    /// Unix milliseconds; `None`: never expires.
    pub expires_at: Option<i64>,
    pub read_only: bool,
}

/// Whom a valid API token acts for, and whether it may only read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenHolder {
    pub admin: AdminId,
    pub read_only: bool,
}

/// One entry of a dashboard top list: a domain or a user and the figure it is ranked by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked<T> {
    pub name: T,
    /// Bytes stored, or logins in the range asked for.
    pub value: u64,
}

/// The dashboard's top lists in one scope, each biggest first (ties by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopLists {
    pub domains_by_storage: Vec<Ranked<DomainName>>,
    /// Maildrops opened (`hourly_stats.logins`) in the range.
    pub domains_by_logins: Vec<Ranked<DomainName>>,
    pub users_by_storage: Vec<Ranked<Address>>,
    /// Successful logins (`login_events`) among the range's most recent `LOGIN_SAMPLE`.
    pub users_by_logins: Vec<Ranked<Address>>,
    /// How many logins `users_by_logins` counted: `LOGIN_SAMPLE` when the range held more.
    pub logins_counted: u64,
}

/// The most logins the users-by-logins ranking counts (the range's most recent), so that the
/// dashboard costs the same on a busy month as on a quiet day.
pub const LOGIN_SAMPLE: u64 = 20_000;

/// Failed POP3 logins in one hour (`login_events` with `success` false).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailedLogins {
    /// Unix time / 3600.
    pub hour: i64,
    pub failed: u64,
}

/// Where a move from an old server stands, in scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationCounts {
    /// Domains in migration mode (`migrate_from` set).
    pub domains: u64,
    /// Users of those domains whose mail has been pulled already.
    pub migrated: u64,
    /// Users of those domains still to be moved (at their first login).
    pub to_go: u64,
}

/// What the help desk typed in the search box, split at the `@`. Local parts are matched by
/// prefix (an index range, so a domain of 100,000 users costs no scan); domains by prefix of
/// the name or of an alias when the term has an `@`, else by substring (domains are few).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchTerm {
    /// `john`: users whose local part starts with it, domains (or aliases) containing it.
    Word(String),
    /// `john@exam`: users whose local part starts with `local` in a domain whose name or alias
    /// starts with `domain`; `@exam` (empty `local`): domains only.
    Address { local: String, domain: String },
}

impl SearchTerm {
    /// The term of a search box's text, in NFC and lower case as local parts and domains are
    /// stored (`LocalPart::parse`); `None` for blank text.
    pub fn parse(raw: &str) -> Option<Self> {
        use unicode_normalization::UnicodeNormalization;
        let text = raw.trim().nfc().collect::<String>().to_lowercase();
        if text.is_empty() {
            return None;
        }
        Some(match text.rsplit_once('@') {
            Some((local, domain)) => SearchTerm::Address {
                local: local.into(),
                domain: domain.trim_end_matches('.').into(),
            },
            None => SearchTerm::Word(text),
        })
    }
}

/// What `Admin::search` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchHits {
    /// Matching users by address (local part, then domain).
    pub users: Vec<UserDetail>,
    /// Matching domains by name.
    pub domains: Vec<DomainDetail>,
    /// The user a `local@domain` term names exactly, through an alias too.
    pub exact: Option<Address>,
}

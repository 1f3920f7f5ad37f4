//! The one provisioning service. Every change to domains, aliases, users, quotas, mailbox
//! policies and admin accounts goes through here, whoever asks: the pages, the API and the
//! `pophost domain|user|admin` commands. Each operation takes the `Actor` (an admin with a
//! scope, or the command line), checks what it may reach (out of scope looks the same as absent),
//! applies the one password policy, makes the change and writes the audit record. The frontends
//! only turn their input into these calls and the results into pages, JSON or lines.
//!
//! `limit` is the one parser of quotas and user limits; `json` the shapes the API returns and the
//! audit log records.

pub mod accounts;
pub mod activity;
pub mod admins;
pub mod alarms;
pub mod app_passwords;
pub mod bin;
pub mod bulletins;
pub mod json;
pub mod limit;
pub mod oauth;
pub mod self_service;
pub mod traces;
pub mod when;

use std::net::IpAddr;
use std::sync::Arc;

use mailstore::{
    Address, Admin, AdminId, AuditEntry, Directory, DomainDetail, DomainName, DomainPolicies,
    DomainSettings, LiveSession, LoginForms, Page, Policies, QuotaChange, Scope, Store, StoreError,
    UserDetail,
};
use serde_json::Value;

pub use admins::{AdminJson, bootstrap_admin, create_admin};
pub use json::{
    DomainJson, LimitJson, ListQuery, MAX_PER_PAGE, PoliciesJson, SessionJson, SessionQuery,
    UserJson,
};
pub use limit::{LimitError, Unit, parse_limit, show_limit};

use crate::password::{PasswordFor, password_problem};

/// The store, as the roles the admin frontend and provisioning use: no maildrops, no delivery.
#[derive(Clone)]
pub struct Roles {
    pub directory: Arc<dyn Directory>,
    pub admin: Arc<dyn Admin>,
    pub policies: Arc<dyn Policies>,
    pub alarms: Arc<dyn mailstore::Alarms>,
    pub bulletins: Arc<dyn mailstore::Bulletins>,
    pub bin: Arc<dyn mailstore::RecycleBin>,
    pub traces: Arc<dyn mailstore::Traces>,
    pub self_service: Arc<dyn mailstore::SelfService>,
    pub app_passwords: Arc<dyn mailstore::AppPasswords>,
    pub oauth: Arc<dyn mailstore::OAuthSettings>,
}

impl Roles {
    /// The three roles of one backend.
    pub fn of(store: Arc<dyn Store>) -> Self {
        Self {
            directory: store.clone(),
            admin: store.clone(),
            alarms: store.clone(),
            bulletins: store.clone(),
            bin: store.clone(),
            traces: store.clone(),
            self_service: store.clone(),
            app_passwords: store.clone(),
            oauth: store.clone(),
            policies: store,
        }
    }
}

/// Who makes a change, with what they may reach.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The admin account; `None` for the command line.
    pub id: Option<AdminId>,
    /// How the audit log names the actor: the admin's e-mail address, or `cli`.
    pub name: String,
    pub scope: Scope,
    /// The session's CSRF token, for the forms a page renders; `None` for API tokens and the CLI.
    pub csrf: Option<String>,
    /// The client's address, for the audit log.
    pub ip: Option<IpAddr>,
    /// What the previous action said, for the page this request renders (browser only).
    pub flash: Option<crate::flash::Flash>,
}

impl Actor {
    /// The `pophost` command line: it may do anything (it can read the database anyway), and the
    /// audit log names it `cli`.
    pub fn cli() -> Self {
        Self {
            id: None,
            name: "cli".into(),
            scope: Scope::All,
            csrf: None,
            ip: None,
            flash: None,
        }
    }

    pub fn is_super(&self) -> bool {
        self.scope.is_all()
    }

    pub fn require_super(&self) -> Result<(), Error> {
        if self.is_super() {
            Ok(())
        } else {
            crate::security::note_forbidden(self);
            Err(Error::Forbidden)
        }
    }

    /// The admin account behind this actor (their API tokens); the command line has none.
    pub fn admin_id(&self) -> Result<AdminId, Error> {
        self.id.ok_or(Error::Forbidden)
    }

    /// The domain `raw` names, if this actor may reach it. Out of scope is `NotFound`, the same
    /// as a domain that does not exist, so names cannot be probed.
    pub fn domain(&self, raw: &str) -> Result<DomainName, Error> {
        let name = DomainName::parse(raw).map_err(|_| Error::NotFound(format!("domain {raw}")))?;
        self.reach(&name)?;
        Ok(name)
    }

    fn reach(&self, name: &DomainName) -> Result<(), Error> {
        if self.scope.allows(name) {
            Ok(())
        } else {
            crate::security::note_cross_tenant(self);
            Err(Error::NotFound(format!("domain {name}")))
        }
    }

    /// Writes one audit-log record of this actor's action. A failure to record is logged, not
    /// returned: the change it describes has already been made.
    pub async fn audit(&self, roles: &Roles, record: Audit<'_>) {
        let entry = AuditEntry {
            at: 0,
            actor: self.name.clone(),
            action: record.action.into(),
            object: record.object.into(),
            domain: record.domain.cloned(),
            before: record.before.map(|v| v.to_string()),
            after: record.after.map(|v| v.to_string()),
            ip: self.ip.map(|ip| ip.to_string()),
            success: record.success,
        };
        if let Err(e) = roles.admin.record_audit(&entry).await {
            tracing::error!(error = %e, action = %entry.action, "audit record not written");
        }
    }
}

/// One audited action, as an operation describes it.
pub struct Audit<'a> {
    pub action: &'a str,
    pub object: &'a str,
    pub domain: Option<&'a DomainName>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub success: bool,
}

impl<'a> Audit<'a> {
    /// A successful action with no before/after.
    pub fn new(action: &'a str, object: &'a str, domain: Option<&'a DomainName>) -> Self {
        Self {
            action,
            object,
            domain,
            before: None,
            after: None,
            success: true,
        }
    }

    pub fn before(mut self, v: impl serde::Serialize) -> Self {
        self.before = serde_json::to_value(v).ok();
        self
    }

    pub fn after(mut self, v: impl serde::Serialize) -> Self {
        self.after = serde_json::to_value(v).ok();
        self
    }
}

/// Why a provisioning operation did nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such object, or one outside the actor's scope: the two look the same.
    #[error("{0} not found")]
    NotFound(String),
    /// The actor's role does not allow this (a domain admin creating a domain).
    #[error("only a super admin may do this")]
    Forbidden,
    /// Input refused, in a sentence safe to show (a short password, a malformed limit).
    #[error("{0}")]
    Invalid(String),
    /// The store refused (a conflict, an invalid value) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Password hashing did not finish.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::password::PasswordProblem> for Error {
    fn from(p: crate::password::PasswordProblem) -> Self {
        Error::Invalid(p.to_string())
    }
}

impl From<LimitError> for Error {
    fn from(e: LimitError) -> Self {
        Error::Invalid(e.to_string())
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Passwords.

/// A mailbox password as an admin gives it: typed (held to the mailbox password policy), or the
/// hash another server stored, so a customer moved in keeps their password.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Password(String),
    /// Dovecot's `{SCHEME}…` form or a bare crypt string (`tenancy::legacy`).
    Hash(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Password(<redacted>)",
            Credential::Hash(_) => "Hash(<redacted>)",
        })
    }
}

/// What the store keeps of a credential: the hash, and the SCRAM-SHA-256 verifier when one can
/// be had (from a typed password, or an imported `{SCRAM-SHA-256}` hash).
pub struct MailboxSecrets {
    pub hash: String,
    pub verifier: Option<String>,
}

/// Checks a credential and turns it into what the store keeps; nothing is stored on an error.
/// Hashing takes tens of milliseconds of CPU, so it runs on the blocking pool. An imported
/// `{PLAIN}` password is the customer's existing one: it is hashed as it is, not held to the
/// policy for new passwords.
pub async fn mailbox_secrets(credential: Credential) -> Result<MailboxSecrets> {
    let password = match credential {
        Credential::Password(p) => {
            password_problem(&p, PasswordFor::Mailbox)?;
            p
        }
        Credential::Hash(h) => match tenancy::legacy::import(&h) {
            Ok(tenancy::legacy::Imported::Stored { hash, scram, .. }) => {
                return Ok(MailboxSecrets {
                    hash,
                    verifier: scram,
                });
            }
            Ok(tenancy::legacy::Imported::Plain(p)) => p,
            Err(e) => return Err(Error::Invalid(e.to_string())),
        },
    };
    tokio::task::spawn_blocking(move || tenancy::Secrets::derive(password.as_bytes()))
        .await
        .map_err(|e| Error::Internal(format!("password hashing did not finish: {e}")))?
        .map(|s| MailboxSecrets {
            hash: s.hash,
            verifier: Some(s.verifier),
        })
        .map_err(|e| Error::Internal(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Reading, scoped.

/// A domain the actor may reach.
pub async fn domain(roles: &Roles, actor: &Actor, name: &DomainName) -> Result<DomainDetail> {
    actor.reach(name)?;
    roles
        .admin
        .domain_detail(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("domain {name}")))
}

/// A page of the domains the actor may reach whose name contains `query.q`; a page past the
/// end gives the last one (`ListQuery::page_within`).
pub async fn domains(
    roles: &Roles,
    actor: &Actor,
    query: &ListQuery,
    page_size: u64,
) -> Result<Page<DomainDetail>> {
    let fetch = |offset| {
        roles
            .admin
            .domain_page(&actor.scope, query.q.trim(), offset, page_size)
    };
    let page = fetch(query.offset(page_size)).await?;
    Ok(match last_page_offset(query, &page, page_size) {
        Some(offset) => fetch(offset).await?,
        None => page,
    })
}

/// Where the last page starts, when `page` came back empty past the end of a listing.
fn last_page_offset<T>(query: &ListQuery, page: &Page<T>, page_size: u64) -> Option<u64> {
    let within = query.page_within(page.total, page_size);
    (page.items.is_empty() && within < query.page()).then(|| (within - 1) * page_size)
}

/// A user of a domain the actor may reach.
pub async fn user(roles: &Roles, actor: &Actor, address: &Address) -> Result<UserDetail> {
    actor.reach(&address.domain)?;
    roles
        .admin
        .user_detail(address)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {address}")))
}

/// A page of `domain`'s users whose local part contains `query.q`; past the end, the last.
pub async fn users(
    roles: &Roles,
    actor: &Actor,
    domain: &DomainName,
    query: &ListQuery,
    page_size: u64,
) -> Result<Page<UserDetail>> {
    actor.reach(domain)?;
    // No read of the domain's detail first (its two user counts cost as much as the page):
    // the page's own statements find the domain, or say it does not exist.
    let fetch = |offset| {
        roles
            .admin
            .user_page(domain, query.q.trim(), offset, page_size)
    };
    let page = match fetch(query.offset(page_size)).await {
        Err(StoreError::NotFound(_)) => return Err(Error::NotFound(format!("domain {domain}"))),
        other => other?,
    };
    Ok(match last_page_offset(query, &page, page_size) {
        Some(offset) => fetch(offset).await?,
        None => page,
    })
}

/// A domain's mailbox policies.
pub async fn policies(roles: &Roles, actor: &Actor, name: &DomainName) -> Result<DomainPolicies> {
    actor.reach(name)?;
    match roles.policies.domain_policies(name).await {
        Err(StoreError::NotFound(_)) => Err(Error::NotFound(format!("domain {name}"))),
        other => Ok(other?),
    }
}

/// The maildrops locked by live POP3 sessions in the actor's scope.
pub async fn live_sessions(roles: &Roles, actor: &Actor) -> Result<Vec<LiveSession>> {
    Ok(roles.admin.live_sessions(&actor.scope).await?)
}

// ---------------------------------------------------------------------------------------------
// Domains.

/// A change to a domain's settings: a field left `None` keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainChange {
    pub quota: QuotaChange,
    /// `Some(None)` removes the limit.
    pub max_users: Option<Option<u64>>,
    pub login_forms: Option<LoginForms>,
    pub allow_apop: Option<bool>,
    pub enabled: Option<bool>,
    /// `Some(Some(url))` puts the domain in migration mode with its old POP3 server;
    /// `Some(None)` takes it out.
    pub migrate_from: Option<Option<String>>,
    /// The recycle bin's days (0: off) and whether it counts against quota.
    pub bin_days: Option<u32>,
    pub bin_counts_quota: Option<bool>,
    /// Whether the domain's users may use the self-service page (`/me`).
    pub self_service: Option<bool>,
    /// Whether only app passwords log in over POP3 and the MTA's auth service.
    pub app_passwords_only: Option<bool>,
}

impl DomainChange {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the change touches what `Admin::update_domain` stores.
    fn touches_settings(&self) -> bool {
        self.quota != QuotaChange::default()
            || self.max_users.is_some()
            || self.login_forms.is_some()
            || self.enabled.is_some()
    }

    fn apply(&self, d: &DomainDetail) -> DomainSettings {
        DomainSettings {
            quota: mailstore::Quota {
                bytes: self.quota.bytes.unwrap_or(d.quota.bytes),
                messages: self.quota.messages.unwrap_or(d.quota.messages),
            },
            max_users: self.max_users.unwrap_or(d.max_users),
            login_forms: self.login_forms.unwrap_or(d.login_forms),
            enabled: self.enabled.unwrap_or(d.enabled),
        }
    }
}

/// Login forms from their names (`at`, `percent`, ...); at least one.
pub fn login_forms<S: AsRef<str>>(names: &[S]) -> Result<LoginForms> {
    let joined = names
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(",");
    LoginForms::parse(&joined).map_err(|e| Error::Invalid(e.to_string()))
}

/// Adds a domain (super admins only) with `change` applied to its default settings.
pub async fn create_domain(
    roles: &Roles,
    actor: &Actor,
    name: &DomainName,
    change: &DomainChange,
) -> Result<DomainDetail> {
    actor.require_super()?;
    actor.reach(name)?;
    roles.directory.add_domain(name).await?;
    let mut after = domain(roles, actor, name).await?;
    if !change.is_empty() {
        after = apply_domain_change(roles, actor, &after, change).await?;
    }
    let audit =
        Audit::new("domain.create", name.as_str(), Some(name)).after(DomainJson::from(&after));
    actor.audit(roles, audit).await;
    Ok(after)
}

/// Changes a domain's settings (super admins only).
pub async fn update_domain(
    roles: &Roles,
    actor: &Actor,
    name: &DomainName,
    change: &DomainChange,
) -> Result<DomainDetail> {
    actor.require_super()?;
    let before = domain(roles, actor, name).await?;
    let after = apply_domain_change(roles, actor, &before, change).await?;
    let audit = Audit::new("domain.update", before.name.as_str(), Some(&before.name))
        .before(DomainJson::from(&before))
        .after(DomainJson::from(&after));
    actor.audit(roles, audit).await;
    Ok(after)
}

async fn apply_domain_change(
    roles: &Roles,
    actor: &Actor,
    before: &DomainDetail,
    change: &DomainChange,
) -> Result<DomainDetail> {
    let name = &before.name;
    if change.touches_settings() {
        roles
            .admin
            .update_domain(name, &change.apply(before))
            .await?;
    }
    if let Some(allow) = change.allow_apop {
        roles.directory.set_allow_apop(name, allow).await?;
    }
    if let Some(source) = &change.migrate_from {
        if let Some(url) = source {
            migrate::Source::parse(url, migrate::TlsOptions::for_migration(url, None))
                .map_err(|e| Error::Invalid(format!("migrate_from: {e}")))?;
        }
        roles
            .directory
            .set_migrate_from(name, source.as_deref())
            .await?;
    }
    if change.bin_days.is_some() || change.bin_counts_quota.is_some() {
        let bin = mailstore::BinSettings {
            days: change.bin_days.unwrap_or(before.bin.days),
            counts_quota: change.bin_counts_quota.unwrap_or(before.bin.counts_quota),
        };
        roles.bin.set_bin_settings(name, &bin).await?;
    }
    if let Some(on) = change.self_service {
        roles.self_service.set_self_service(name, on).await?;
    }
    if let Some(only) = change.app_passwords_only {
        roles
            .app_passwords
            .set_app_passwords_only(name, only)
            .await?;
    }
    domain(roles, actor, name).await
}

/// Removes a domain (super admins only): refused while it has users, unless `force`.
pub async fn delete_domain(
    roles: &Roles,
    actor: &Actor,
    name: &DomainName,
    force: bool,
) -> Result<()> {
    actor.require_super()?;
    let before = domain(roles, actor, name).await?;
    roles.directory.remove_domain(&before.name, force).await?;
    let audit = Audit::new("domain.delete", before.name.as_str(), Some(&before.name))
        .before(DomainJson::from(&before));
    actor.audit(roles, audit).await;
    Ok(())
}

/// Makes `alias` another name of `name` (super admins only).
pub async fn add_alias(
    roles: &Roles,
    actor: &Actor,
    name: &DomainName,
    alias: &DomainName,
) -> Result<DomainDetail> {
    actor.require_super()?;
    let before = domain(roles, actor, name).await?;
    roles.directory.add_alias(alias, &before.name).await?;
    let after = domain(roles, actor, &before.name).await?;
    audit_alias(roles, actor, "domain.alias.add", &before, &after).await;
    Ok(after)
}

/// Removes `alias`, which must be an alias of `name` (super admins only).
pub async fn remove_alias(
    roles: &Roles,
    actor: &Actor,
    name: &DomainName,
    alias: &DomainName,
) -> Result<DomainDetail> {
    actor.require_super()?;
    let before = domain(roles, actor, name).await?;
    if !before.aliases.contains(alias) {
        return Err(Error::NotFound(format!("alias {alias} of {name}")));
    }
    roles.directory.remove_alias(alias).await?;
    let after = domain(roles, actor, &before.name).await?;
    audit_alias(roles, actor, "domain.alias.remove", &before, &after).await;
    Ok(after)
}

async fn audit_alias(
    roles: &Roles,
    actor: &Actor,
    action: &str,
    before: &DomainDetail,
    after: &DomainDetail,
) {
    let name = &before.name;
    let audit = Audit::new(action, name.as_str(), Some(name))
        .before(DomainJson::from(before))
        .after(DomainJson::from(after));
    actor.audit(roles, audit).await;
}

/// A change to a domain's policies: a field left `None` keeps its value; `Some(None)` is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyChange {
    pub quota_tempfail: Option<bool>,
    pub quota_warn_percent: Option<Option<u8>>,
    pub retention_days: Option<Option<u32>>,
    pub login_delay_secs: Option<Option<u32>>,
}

impl PolicyChange {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl From<&DomainPolicies> for PolicyChange {
    /// Every policy set to `p`'s.
    fn from(p: &DomainPolicies) -> Self {
        Self {
            quota_tempfail: Some(p.quota_tempfail),
            quota_warn_percent: Some(p.quota_warn_percent),
            retention_days: Some(p.retention_days),
            login_delay_secs: Some(p.login_delay_secs),
        }
    }
}

/// Changes a domain's policies (super admins only; the store validates the values).
pub async fn update_policies(
    roles: &Roles,
    actor: &Actor,
    name: &DomainName,
    change: &PolicyChange,
) -> Result<DomainPolicies> {
    actor.require_super()?;
    let before = policies(roles, actor, name).await?;
    let new = DomainPolicies {
        quota_tempfail: change.quota_tempfail.unwrap_or(before.quota_tempfail),
        quota_warn_percent: change
            .quota_warn_percent
            .unwrap_or(before.quota_warn_percent),
        retention_days: change.retention_days.unwrap_or(before.retention_days),
        login_delay_secs: change.login_delay_secs.unwrap_or(before.login_delay_secs),
    };
    roles.policies.set_domain_policies(name, &new).await?;
    let after = policies(roles, actor, name).await?;
    let audit = Audit::new("domain.policies", name.as_str(), Some(name))
        .before(PoliciesJson::from(&before))
        .after(PoliciesJson::from(&after));
    actor.audit(roles, audit).await;
    Ok(after)
}

// ---------------------------------------------------------------------------------------------
// Users.

/// A change to a user: a field left `None` keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    pub quota: QuotaChange,
    pub password: Option<Credential>,
    pub enabled: Option<bool>,
}

impl UserChange {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

async fn audit_user(
    roles: &Roles,
    actor: &Actor,
    action: &str,
    before: Option<&UserDetail>,
    after: Option<&UserDetail>,
) {
    let Some(address) = before.or(after).map(|u| &u.address) else {
        return;
    };
    let object = address.to_string();
    let mut record = Audit::new(action, &object, Some(&address.domain));
    if let Some(u) = before {
        record = record.before(UserJson::from(u));
    }
    if let Some(u) = after {
        record = record.after(UserJson::from(u));
    }
    actor.audit(roles, record).await;
}

/// Creates a mailbox: the password policy and the domain's user limit are checked first.
pub async fn create_user(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    credential: Credential,
    quota: QuotaChange,
) -> Result<UserDetail> {
    // The store checks that the domain exists and has room in the insert itself. No domain
    // detail is read first: its user counts cost a scan of the domain's users, which made a
    // bulk import quadratic.
    actor.reach(&address.domain)?;
    let secrets = mailbox_secrets(credential).await?;
    roles
        .directory
        .add_user(address, &secrets.hash, secrets.verifier.as_deref())
        .await?;
    // The account goes in first, then its quota: a quota the store refuses (one larger than the
    // domain's) takes the new account out again, so a refused creation leaves nothing behind.
    if quota != QuotaChange::default()
        && let Err(e) = roles.directory.set_user_quota(address, quota).await
    {
        roles.directory.remove_user(address).await?;
        return Err(e.into());
    }
    let after = user(roles, actor, address).await?;
    audit_user(roles, actor, "user.create", None, Some(&after)).await;
    Ok(after)
}

/// Changes a user's quota, password and whether they may log in, in that order, each audited on
/// its own. Everything is checked before anything is changed.
pub async fn update_user(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    change: UserChange,
) -> Result<UserDetail> {
    let mut current = user(roles, actor, address).await?;
    // Checked (and hashed) before anything changes.
    let secrets = match change.password {
        Some(credential) => {
            Some(app_passwords::main_secrets(roles, &current.address, credential).await?)
        }
        None => None,
    };
    let address = current.address.clone();
    if change.quota != QuotaChange::default() {
        roles
            .directory
            .set_user_quota(&address, change.quota)
            .await?;
        let after = user(roles, actor, &address).await?;
        audit_user(roles, actor, "user.update", Some(&current), Some(&after)).await;
        current = after;
    }
    if let Some(secrets) = secrets {
        roles
            .directory
            .set_password(&address, &secrets.hash, secrets.verifier.as_deref())
            .await?;
        // Whoever had the old password may hold a self-service session: it ends (the page
        // that made the change starts a new one for its user).
        roles.self_service.end_user_sessions(&address, None).await?;
        let after = user(roles, actor, &address).await?;
        audit_user(roles, actor, "user.password", Some(&current), Some(&after)).await;
        current = after;
    }
    if let Some(enabled) = change.enabled {
        roles.admin.set_user_enabled(&address, enabled).await?;
        if !enabled {
            // Enabling again must not bring back the sessions of before.
            roles.self_service.end_user_sessions(&address, None).await?;
        }
        let after = user(roles, actor, &address).await?;
        let action = if enabled {
            "user.enable"
        } else {
            "user.disable"
        };
        audit_user(roles, actor, action, Some(&current), Some(&after)).await;
        current = after;
    }
    Ok(current)
}

/// Removes a user and all their mail.
pub async fn delete_user(roles: &Roles, actor: &Actor, address: &Address) -> Result<()> {
    let before = user(roles, actor, address).await?;
    roles.directory.remove_user(&before.address).await?;
    audit_user(roles, actor, "user.delete", Some(&before), None).await;
    Ok(())
}

/// Sets (`Some`, already sealed under the server's APOP key) or clears a user's APOP secret.
/// The audit log records only whether there is one.
pub async fn set_apop_secret(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    sealed: Option<String>,
) -> Result<()> {
    let current = user(roles, actor, address).await?;
    let set = sealed.is_some();
    roles
        .directory
        .set_apop_secret(&current.address, sealed)
        .await?;
    let object = current.address.to_string();
    let audit = Audit::new("user.apop", &object, Some(&current.address.domain))
        .after(serde_json::json!({ "apop_secret": set }));
    actor.audit(roles, audit).await;
    Ok(())
}

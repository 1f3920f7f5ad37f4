//! pophost's store: all of its SQL. `model` holds the validated names and records; `error` the
//! one error type; the traits below are the roles the frontends use (`Directory` for
//! provisioning and login, `Maildrops` and `Policies` for POP3 sessions, `Delivery` for LMTP,
//! `Admin` for the admin UI and API). `sql` implements every role once, generic over a
//! `Dialect`; `sqlite` (an embedded file, the default) and `postgres` (shared by many frontends)
//! are the two dialects: the SQL fragments spelled differently and the few operations that work
//! differently. One conformance suite runs against both.
//!
//! Messages are stored as a shared body (a blob, written in chunks so neither delivery nor RETR
//! holds a whole message in memory) plus a per-recipient header block; the octet size is
//! computed at delivery, so STAT and LIST never read bodies.

mod activity;
mod admin;
mod alarm;
mod app_password;
mod batch;
mod bin;
mod bulk;
mod bulletin;
mod convert;
mod dedup;
mod error;
mod group;
mod held;
mod model;
mod oauth;
mod policy;
mod postgres;
mod self_service;
mod sql;
mod sqlite;
mod trace;

use std::time::Duration;

use async_trait::async_trait;

pub use activity::*;
pub use admin::*;
pub use alarm::*;
pub use app_password::*;
pub use bin::*;
pub use bulk::*;
pub use bulletin::*;
pub use dedup::{DedupKey, Deduplication};
pub use error::{Result, StoreError};
pub use model::*;
pub use oauth::*;
pub use policy::*;
pub use postgres::{PgOptions, PostgresStore};
pub use self_service::*;
pub use sql::{Dialect, SqlStore};
pub use sqlite::SqliteStore;
pub use trace::*;

/// Size of the chunks a body is stored and read in: the memory a delivery or a RETR holds at once.
pub const CHUNK_SIZE: usize = 128 * 1024;

/// Provisioning and login lookups.
#[async_trait]
pub trait Directory: Send + Sync {
    async fn add_domain(&self, name: &DomainName) -> Result<()>;
    async fn list_domains(&self) -> Result<Vec<DomainInfo>>;
    /// Removes a domain. With users left it fails with `Conflict`, unless `force`, which removes
    /// the users and their mail too.
    async fn remove_domain(&self, name: &DomainName, force: bool) -> Result<()>;
    async fn set_domain_quota(&self, name: &DomainName, change: QuotaChange) -> Result<()>;
    /// Adds a user with an argon2 hash and, if derived, a SCRAM-SHA-256 verifier.
    async fn add_user(
        &self,
        address: &Address,
        password_hash: &str,
        scram: Option<&str>,
    ) -> Result<UserId>;
    async fn list_users(&self, domain: &DomainName) -> Result<Vec<UserInfo>>;
    /// Replaces the hash and the SCRAM verifier together (`None` clears it: an old verifier
    /// must never keep the old password working).
    async fn set_password(
        &self,
        address: &Address,
        password_hash: &str,
        scram: Option<&str>,
    ) -> Result<()>;
    /// Replaces a legacy hash that a login just verified with pophost's own hash and SCRAM
    /// verifier, in one statement: only while the user still holds `old_hash`, so a password
    /// changed meanwhile is not overwritten. True when it was replaced.
    async fn upgrade_password(
        &self,
        user: UserId,
        old_hash: &str,
        password_hash: &str,
        scram: &str,
    ) -> Result<bool>;
    /// Removes a user and all their mail.
    async fn remove_user(&self, address: &Address) -> Result<()>;
    async fn set_user_quota(&self, address: &Address, change: QuotaChange) -> Result<()>;
    /// Looks a user up by the domain's own name (not an alias).
    async fn find_user(&self, address: &Address) -> Result<Option<UserAuth>>;
    /// The domain `name` is, or is an alias of, with its login policy.
    async fn domain_policy(&self, name: &DomainName) -> Result<Option<DomainPolicy>>;
    /// Puts a domain in migration mode with its old POP3 server's URL, or (`None`) takes it out.
    async fn set_migrate_from(&self, domain: &DomainName, source: Option<&str>) -> Result<()>;
    /// Records that the user's mail has been pulled from the old server.
    async fn finish_migration(&self, user: UserId) -> Result<()>;
    async fn set_login_forms(&self, domain: &DomainName, forms: LoginForms) -> Result<()>;
    /// Sets (or with `None` clears) a user's APOP secret, as encrypted by the caller.
    async fn set_apop_secret(&self, address: &Address, secret: Option<String>) -> Result<()>;
    /// Whether users of `domain` may log in with APOP.
    async fn set_allow_apop(&self, domain: &DomainName, allow: bool) -> Result<()>;
    /// Looks a user up for APOP by the domain's own name (not an alias).
    async fn find_apop_user(&self, address: &Address) -> Result<Option<ApopUser>>;
    /// Makes `alias` another name of `domain`, for logins and deliveries.
    async fn add_alias(&self, alias: &DomainName, domain: &DomainName) -> Result<()>;
    async fn remove_alias(&self, alias: &DomainName) -> Result<()>;
    /// Every alias with its domain, by alias.
    async fn list_aliases(&self) -> Result<Vec<(DomainName, DomainName)>>;
    /// Counts a login attempt under each key before it is checked, forgets rows older than an
    /// hour, and returns the attempt with, per key in their order, the rows in the last
    /// `window` — this attempt, every attempt counted before it (on any frontend) and still
    /// under way or failed, and recorded failures. An attempt counted before another is always
    /// in the other's count, so of N attempts made at once the k-th sees at least k.
    async fn count_auth_attempt(
        &self,
        keys: &[String],
        window: Duration,
    ) -> Result<(AuthAttempt, Vec<u64>)>;
    /// The attempt succeeded: removes its own rows (a success is not a failure) and every row
    /// under `clear`.
    async fn forget_auth_attempt(&self, attempt: &AuthAttempt, clear: &[String]) -> Result<()>;
    /// Records a failed login in the user's (or, for a mailbox that does not exist, the
    /// domain's) login history; see `FailedLogin` for how the reason is refined.
    async fn record_failed_login(&self, failure: &FailedLogin) -> Result<()>;
}

/// What a POP3 session does to a maildrop.
#[async_trait]
pub trait Maildrops: Send + Sync {
    /// Called once when a server starts, before the first login: claims this node for this
    /// process, then frees at once every maildrop lock the node's previous run held (a crash
    /// leaves them behind) and drops bodies that run was still writing. While another server
    /// with this node id is alive it changes nothing and fails with `Conflict` naming that
    /// server. On Postgres a claim that is still being renewed is alive; one made under the
    /// serve lock `me` now holds, or left unrenewed for its TTL, was a dead run's and is taken
    /// over (this waits up to that TTL to tell). On SQLite the serve lock next to the database
    /// file already keeps a second server out: there is nothing more to claim.
    async fn recover(&self, me: &Claimant) -> Result<()>;
    /// Renews this server's claim on its node; `Conflict` once another server took the node
    /// over (this one went unheard for a TTL). Call it every TTL / 3.
    async fn heartbeat(&self) -> Result<()>;
    /// Gives the node up at a clean shutdown, so that its next start need not wait.
    async fn leave(&self) -> Result<()>;
    /// Takes the exclusive maildrop lock, or fails with `InUse`.
    async fn lock(&self, user: UserId) -> Result<Lease>;
    /// Gives the lock up without changing anything (session ended without QUIT). The lease is
    /// no longer renewed even if this fails.
    async fn unlock(&self, lease: &Lease) -> Result<()>;
    /// Extends every lease this process holds for a live session, in one statement, and returns
    /// the tokens of held leases that are gone from the store (an admin broke the lock, or it
    /// expired and was taken): their sessions must end. Those are no longer renewed.
    async fn renew_leases(&self) -> Result<Vec<i64>>;
    /// The maildrop's messages in delivery order.
    async fn list(&self, user: UserId) -> Result<Vec<MessageMeta>>;
    /// Part 0 of a message is its header block, parts 1.. its body chunks; `None` past the end.
    async fn read_part(&self, message: &MessageMeta, part: u32) -> Result<Option<Vec<u8>>>;
    /// Parts `first..first + count` of a message, as `read_part` gives them, fewer at its end
    /// (none past it): one store round trip for several parts of a large message.
    async fn read_parts(
        &self,
        message: &MessageMeta,
        first: u32,
        count: u32,
    ) -> Result<Vec<Vec<u8>>>;
    /// UPDATE: removes `deleted` and releases the lock in one transaction, only while `lease`
    /// still holds the maildrop (else `LeaseLost` and nothing changes). The lease is no longer
    /// renewed after this, whatever the outcome.
    async fn commit_update(&self, lease: &Lease, deleted: &[MessageId]) -> Result<()>;
    /// `lock`, for a login: the same transaction records the successful login event (the
    /// session's client address and TLS come from it). A refusal (`InUse`, `LoginDelay`) is
    /// recorded as a failed login.
    async fn lock_for_login(&self, user: UserId, login: &LoginRecord) -> Result<Lease>;
    /// Ends a session: with `end.update` `Some(deleted)` as `commit_update` (QUIT), with `None`
    /// as `unlock` (no QUIT); either way what it retrieved, and what the UPDATE deleted, are
    /// added to the user's stats of the day in the same transaction.
    async fn end_session(&self, lease: &Lease, end: &SessionEnd<'_>) -> Result<()>;
}

/// What LMTP does: write a body, then deliver it to recipients in one transaction.
#[async_trait]
pub trait Delivery: Send + Sync {
    /// The user an envelope recipient names, through domain aliases.
    async fn find_recipient(&self, address: &Address) -> Result<Option<UserId>>;
    /// At RCPT, in one statement: the user `address` names (`None`: no such user), or
    /// `Err(QuotaExceeded)` / `Err(QuotaExceededTemporary)` when they or their domain are
    /// already full, or would be by a message of the declared `size`.
    async fn accept_recipient(
        &self,
        address: &Address,
        size: Option<u64>,
    ) -> Result<Option<UserId>>;
    /// Starts the body of a large message; it stays pending (and is cleaned up after a crash)
    /// until `deliver`.
    async fn begin_blob(&self) -> Result<BlobId>;
    async fn append_chunk(&self, blob: BlobId, seq: u32, data: &[u8]) -> Result<()>;
    /// Stores the body for each recipient whose quota allows it, in one transaction; returns
    /// one outcome per recipient, in order. The body is kept once however many recipients got
    /// it, and dropped if none did. Deliveries arriving together share a transaction and its
    /// commit (group commit): each is acknowledged only once that commit is durable.
    async fn deliver(&self, parcel: Parcel) -> Result<Vec<Result<()>>>;
    async fn discard_blob(&self, blob: BlobId) -> Result<()>;
}

/// What the admin UI and API need beyond `Directory`. Listings take the caller's `Scope` and
/// apply it in SQL; single objects are checked against it by the caller before they are named.
/// Times are Unix milliseconds passed in by the caller, so session expiry can be tested.
#[async_trait]
pub trait Admin: Send + Sync {
    /// Adds an admin; `email` must be unique (`Conflict`), the domains of a `Scope::Domains`
    /// must exist (`NotFound`).
    async fn add_admin(&self, email: &str, password_hash: &str, scope: &Scope) -> Result<AdminId>;
    async fn find_admin(&self, email: &str) -> Result<Option<AdminAccount>>;
    async fn admin_by_id(&self, id: AdminId) -> Result<Option<AdminAccount>>;
    async fn count_admins(&self) -> Result<u64>;

    /// Stores a new browser session under the hash of its cookie value.
    async fn create_admin_session(
        &self,
        id_hash: &str,
        admin: AdminId,
        csrf: &str,
        now: i64,
    ) -> Result<()>;
    async fn admin_session(&self, id_hash: &str) -> Result<Option<AdminSession>>;
    async fn touch_admin_session(&self, id_hash: &str, now: i64) -> Result<()>;
    async fn delete_admin_session(&self, id_hash: &str) -> Result<()>;
    /// Forgets sessions last seen before `idle_before` or created before `created_before`.
    async fn prune_admin_sessions(&self, idle_before: i64, created_before: i64) -> Result<()>;

    /// Stores an API token by the hash of its secret.
    async fn add_api_token(
        &self,
        admin: AdminId,
        name: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<i64>;
    /// The admin a token belongs to and whether it is read-only, recording its use; `None` for
    /// an unknown token, one expired at `now`, or one of a disabled admin.
    async fn use_api_token(&self, token_hash: &str, now: i64) -> Result<Option<TokenHolder>>;
    async fn list_api_tokens(&self, admin: AdminId) -> Result<Vec<ApiToken>>;
    /// Revokes one of `admin`'s own tokens (`NotFound` for anyone else's).
    async fn revoke_api_token(&self, admin: AdminId, id: i64) -> Result<()>;

    /// Domains in scope whose name contains `search`, by name.
    async fn domain_page(
        &self,
        scope: &Scope,
        search: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<DomainDetail>>;
    async fn domain_detail(&self, name: &DomainName) -> Result<Option<DomainDetail>>;
    async fn update_domain(&self, name: &DomainName, settings: &DomainSettings) -> Result<()>;
    /// Users of `domain` whose local part contains `search`, by local part.
    async fn user_page(
        &self,
        domain: &DomainName,
        search: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<UserDetail>>;
    async fn user_detail(&self, address: &Address) -> Result<Option<UserDetail>>;
    async fn set_user_enabled(&self, address: &Address, enabled: bool) -> Result<()>;

    /// Maildrops locked by live sessions, in scope.
    async fn live_sessions(&self, scope: &Scope) -> Result<Vec<LiveSession>>;
    /// Frees a maildrop's lock; the frontend holding it ends that session at its next lease
    /// renewal. `false` when it was not locked.
    async fn break_lock(&self, address: &Address) -> Result<bool>;

    /// Appends to the audit log (the store sets `at`).
    async fn record_audit(&self, entry: &AuditEntry) -> Result<()>;
    /// The audit log in scope, newest first. A domain admin sees entries of their domains only.
    async fn audit_page(
        &self,
        scope: &Scope,
        filter: &AuditFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<AuditEntry>>;

    /// Deliveries and logins per hour from `since_hour` on, in scope; hours without activity are
    /// left out.
    async fn hourly_stats(&self, scope: &Scope, since_hour: i64) -> Result<Vec<HourlyStat>>;
    async fn totals(&self, scope: &Scope) -> Result<Totals>;
    /// How many accounts in scope still hold each legacy password scheme (imported and not
    /// logged in with since), by scheme name.
    async fn legacy_schemes(&self, scope: &Scope) -> Result<Vec<(String, u64)>>;

    /// The dashboard's top `limit` domains and users in scope by storage, and by logins from
    /// `since_ms` on (domains counted per hour, so from the hour `since_ms` falls in).
    async fn top_lists(&self, scope: &Scope, since_ms: i64, limit: u64) -> Result<TopLists>;
    /// Failed POP3 logins per hour from `since_hour` on, in scope; hours without any are left
    /// out. A failure naming no existing domain counts for super admins only.
    async fn failed_logins(&self, scope: &Scope, since_hour: i64) -> Result<Vec<FailedLogins>>;
    /// Domains in migration mode in scope and how many of their users have moved.
    async fn migration_counts(&self, scope: &Scope) -> Result<MigrationCounts>;

    /// Every admin account by e-mail, with their domains, last sign-in and token count.
    async fn list_admins(&self) -> Result<Vec<AdminListing>>;
    /// Makes `id` a super admin or the admin of these domains (which must exist: `NotFound`).
    /// `Conflict` when that would leave no enabled super admin.
    async fn set_admin_scope(&self, id: AdminId, scope: &Scope) -> Result<()>;
    async fn set_admin_password(&self, id: AdminId, password_hash: &str) -> Result<()>;
    /// `Conflict` when disabling would leave no enabled super admin.
    async fn set_admin_disabled(&self, id: AdminId, disabled: bool) -> Result<()>;
    /// Removes an admin with their sessions and tokens (the audit log keeps their actions).
    /// `Conflict` when that would leave no enabled super admin.
    async fn remove_admin(&self, id: AdminId) -> Result<()>;
    /// Ends every browser session of an admin; how many there were.
    async fn delete_admin_sessions(&self, id: AdminId) -> Result<u64>;
    /// Revokes every API token of an admin; how many there were.
    async fn revoke_admin_tokens(&self, id: AdminId) -> Result<u64>;
    /// Stores an API token with an expiry and a read-only flag.
    async fn create_api_token(
        &self,
        admin: AdminId,
        token: &NewApiToken<'_>,
        now: i64,
    ) -> Result<i64>;
    /// Records a successful sign-in (Unix ms, client address) on the account.
    async fn record_admin_signin(&self, id: AdminId, at: i64, ip: Option<&str>) -> Result<()>;
    /// The last `limit` sign-in attempts (successful or not) the audit log holds under the
    /// sign-in name `email`, newest first.
    async fn admin_signins(&self, email: &str, limit: u64) -> Result<Vec<AuditEntry>>;

    /// The help desk's search box, in scope: see `SearchTerm`. At most `limit` users and
    /// `limit` domains; the user a term names exactly comes back in `exact`.
    async fn search(&self, scope: &Scope, term: &SearchTerm, limit: u64) -> Result<SearchHits>;

    /// A user's last login and delivery, what they retrieved and deleted in the last
    /// `ACTIVITY_DAYS` days, and their last `RECENT_LOGINS` logins; `None` for no such user.
    async fn user_activity(&self, address: &Address) -> Result<Option<UserActivity>>;
    /// Forgets login events and daily stats from before `before_ms` (Unix milliseconds);
    /// returns how many rows went.
    async fn prune_activity(&self, before_ms: i64) -> Result<u64>;
}

/// Every role of one backend.
pub trait Store:
    Directory
    + Maildrops
    + Delivery
    + Admin
    + Policies
    + Traces
    + Bulletins
    + RecycleBin
    + Deduplication
    + Alarms
    + OAuthSettings
    + SelfService
    + AppPasswords
    + BulkLoad
{
}
impl<
    T: Directory
        + Maildrops
        + Delivery
        + Admin
        + Policies
        + Traces
        + Bulletins
        + RecycleBin
        + Deduplication
        + Alarms
        + OAuthSettings
        + SelfService
        + AppPasswords
        + BulkLoad,
> Store for T
{
}

/// A store's connection pool at one moment (`SqlStore::pool_usage`), for the pool-usage
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Open connections, idle or in use.
    pub size: u32,
    pub idle: usize,
    /// The most the pool opens.
    pub max: u32,
}

/// How this process takes part in maildrop locking.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// Stable name of this frontend: a restart releases the locks its previous run held.
    pub node: String,
    /// How long a lease lives without renewal: the most a crashed frontend can stall a mailbox.
    pub ttl: Duration,
    /// The time leases are measured in.
    pub clock: LeaseClock,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            node: "local".into(),
            ttl: Duration::from_secs(30),
            clock: LeaseClock::default(),
        }
    }
}

/// The time maildrop leases and LOGIN-DELAY are measured in: the backend's clock (on Postgres
/// the database's, so frontends with skewed clocks agree), moved forward by what `advance`
/// added. Nothing but tests advances it: they let a lease expire without waiting for it. Clones
/// share one offset, so stores opened with clones of one clock see the same time.
#[derive(Debug, Clone, Default)]
pub struct LeaseClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl LeaseClock {
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
        self.0.fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Milliseconds this clock is ahead of the backend's.
    pub(crate) fn offset_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Who is starting a server, for `Maildrops::recover`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    /// The machine's name, to name this server to a second one.
    pub host: String,
    /// Names the lock file this server holds for as long as it runs (the machine, the file's
    /// device and inode): a previous run that held the same file is dead, as it is free now.
    pub serve_lock: String,
}

//! pophost's store. `model` holds the validated names and records; `error` the one error type;
//! the traits below are the roles the frontends need (`Directory` for provisioning and login,
//! `Maildrops` for POP3 sessions, `Delivery` for LMTP); `sqlite` implements them on an embedded
//! SQLite file. All SQL lives in this crate; a Postgres backend implements the same traits.
//!
//! Messages are stored as a shared body (a blob, written in chunks so neither delivery nor RETR
//! holds a whole message in memory) plus a per-recipient header block; the octet size is
//! computed at delivery, so STAT and LIST never read bodies.

mod convert;
mod error;
mod held;
mod model;
mod postgres;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;

pub use error::{Result, StoreError};
pub use model::*;
pub use postgres::{PgOptions, PostgresStore};
pub use sqlite::SqliteStore;

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
    /// Removes a user and all their mail.
    async fn remove_user(&self, address: &Address) -> Result<()>;
    async fn set_user_quota(&self, address: &Address, change: QuotaChange) -> Result<()>;
    /// Looks a user up by the domain's own name (not an alias).
    async fn find_user(&self, address: &Address) -> Result<Option<UserAuth>>;
    /// The domain `name` is, or is an alias of, with its login policy.
    async fn domain_policy(&self, name: &DomainName) -> Result<Option<DomainPolicy>>;
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
    /// Records one failed login under each key (client network, account), and forgets
    /// failures older than an hour.
    async fn record_auth_failure(&self, keys: &[String]) -> Result<()>;
    /// Failed logins under `key` in the last `window`.
    async fn auth_failures(&self, key: &str, window: Duration) -> Result<u64>;
}

/// What a POP3 session does to a maildrop.
#[async_trait]
pub trait Maildrops: Send + Sync {
    /// Called once when a server starts: frees at once every maildrop lock this node's previous
    /// run held (a crash leaves them behind) and drops bodies that run was still writing.
    async fn recover(&self) -> Result<()>;
    /// Takes the exclusive maildrop lock, or fails with `InUse`.
    async fn lock(&self, user: UserId) -> Result<Lease>;
    /// Gives the lock up without changing anything (session ended without QUIT). The lease is
    /// no longer renewed even if this fails.
    async fn unlock(&self, lease: &Lease) -> Result<()>;
    /// Extends every lease this process holds for a live session, in one statement.
    async fn renew_leases(&self) -> Result<()>;
    /// The maildrop's messages in delivery order.
    async fn list(&self, user: UserId) -> Result<Vec<MessageMeta>>;
    /// Part 0 of a message is its header block, parts 1.. its body chunks; `None` past the end.
    async fn read_part(&self, message: &MessageMeta, part: u32) -> Result<Option<Vec<u8>>>;
    /// UPDATE: removes `deleted` and releases the lock in one transaction, only while `lease`
    /// still holds the maildrop (else `LeaseLost` and nothing changes). The lease is no longer
    /// renewed after this, whatever the outcome.
    async fn commit_update(&self, lease: &Lease, deleted: &[MessageId]) -> Result<()>;
}

/// What LMTP does: write a body, then deliver it to recipients in one transaction.
#[async_trait]
pub trait Delivery: Send + Sync {
    /// The user an envelope recipient names, through domain aliases.
    async fn find_recipient(&self, address: &Address) -> Result<Option<UserId>>;
    /// Starts a body; it stays pending (and is cleaned up after a crash) until `deliver`.
    async fn begin_blob(&self) -> Result<BlobId>;
    async fn append_chunk(&self, blob: BlobId, seq: u32, data: &[u8]) -> Result<()>;
    /// Stores the body for each recipient whose quota allows it, all in one transaction;
    /// returns one outcome per recipient, in order. The body is kept once however many
    /// recipients got it, and dropped if none did.
    async fn deliver(
        &self,
        blob: BlobId,
        body_size: u64,
        recipients: &[Recipient],
    ) -> Result<Vec<Result<()>>>;
    async fn discard_blob(&self, blob: BlobId) -> Result<()>;
}

/// Every role of one backend.
pub trait Store: Directory + Maildrops + Delivery {}
impl<T: Directory + Maildrops + Delivery> Store for T {}

/// How this process takes part in maildrop locking.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// Stable name of this frontend: a restart releases the locks its previous run held.
    pub node: String,
    /// How long a lease lives without renewal: the most a crashed frontend can stall a mailbox.
    pub ttl: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            node: "local".into(),
            ttl: Duration::from_secs(30),
        }
    }
}

//! The self-service page's store role (issue 22, item 2): the per-domain switch that opens
//! `/me` to a domain's users, the sign-in lookup, and the users' own browser sessions, kept
//! apart from `admin_sessions` so that no user session can ever be read as an admin's.
//!
//! Every read of a session goes through the user and their domain: a session of a user who was
//! disabled or removed, or whose domain was disabled or had the page turned off since, reads as
//! no session at all.

use async_trait::async_trait;

use crate::{Address, DomainName, Result, UserId};

/// What the sign-in form checks a password against: only for an enabled user of an enabled
/// domain with the page on (and, in migration mode, only once the mailbox has moved, since its
/// password is the old server's until then).
#[derive(Clone, PartialEq, Eq)]
pub struct SelfServiceUser {
    pub id: UserId,
    /// The argon2id PHC string (or a hash imported from another server).
    pub password_hash: String,
}

impl std::fmt::Debug for SelfServiceUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfServiceUser")
            .field("id", &self.id)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// A signed-in user's browser session. The cookie carries a random id; the store keeps its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    pub user: UserId,
    /// The mailbox (canonical domain): the only one the session may touch.
    pub address: Address,
    /// The CSRF token of every form of this session.
    pub csrf: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub last_seen: i64,
}

#[async_trait]
pub trait SelfService: Send + Sync {
    /// Whether `domain`'s users may use the self-service page; `NotFound` for no such domain.
    async fn self_service(&self, domain: &DomainName) -> Result<bool>;
    /// Turns the page on or off for `domain`; off ends its users' sessions. `NotFound` for no
    /// such domain.
    async fn set_self_service(&self, domain: &DomainName, on: bool) -> Result<()>;
    /// The user `address` names, if they may sign in to the page now (see `SelfServiceUser`).
    async fn self_service_user(&self, address: &Address) -> Result<Option<SelfServiceUser>>;

    async fn create_user_session(
        &self,
        id_hash: &str,
        user: UserId,
        csrf: &str,
        now: i64,
    ) -> Result<()>;
    /// The session `id_hash`, if its user may still use the page (see the module).
    async fn user_session(&self, id_hash: &str) -> Result<Option<UserSession>>;
    async fn touch_user_session(&self, id_hash: &str, now: i64) -> Result<()>;
    async fn delete_user_session(&self, id_hash: &str) -> Result<()>;
    /// Ends every session of the user `address` (enabled or not) but `keep`: after their
    /// password changed or they were disabled.
    async fn end_user_sessions(&self, address: &Address, keep: Option<&str>) -> Result<()>;
    /// Forgets sessions last used before `idle_before` or made before `created_before`.
    async fn prune_user_sessions(&self, idle_before: i64, created_before: i64) -> Result<()>;
}

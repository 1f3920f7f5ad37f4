//! App passwords (issue 22, item 1): a user's per-device passwords. pophost generates each one
//! (`tenancy::app_passwords`), shows it once and keeps its argon2id hash and SCRAM verifiers
//! here, under a label unique per user. Each logs in over POP3 and the MTA's auth service like
//! the main password, records its last use, and is revoked alone: revoking deletes the maildrop
//! lock of a POP3 session that logged in with it, so that session ends at its next lease
//! renewal. A domain may require them (`app_passwords_only`): its main passwords then log in to
//! the self-service page only.

use async_trait::async_trait;

use crate::{Address, DomainName, Lease, Result, UserId};

/// App passwords a user may hold: a failed login verifies at most the ones whose tag matches,
/// and SCRAM tries each one's StoredKey, so this bounds what one login costs.
pub const MAX_APP_PASSWORDS: usize = 20;

/// The longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

/// One app password as its owner and admins see it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPassword {
    pub id: i64,
    pub label: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Its last successful login: Unix milliseconds, client address, mechanism.
    pub last_used_at: Option<i64>,
    pub last_ip: Option<String>,
    pub last_mechanism: Option<String>,
}

/// What a login checks an app password against.
#[derive(Clone, PartialEq, Eq)]
pub struct AppPasswordSecret {
    pub id: i64,
    /// Two bytes of a hash of the password (hex): picks the rows a typed password can match.
    pub tag: String,
    pub password_hash: String,
    /// SCRAM-SHA-256 verifiers, one per line (the password as shown and without separators).
    pub scram: String,
}

impl std::fmt::Debug for AppPasswordSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppPasswordSecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A new app password as the store keeps it (already hashed).
#[derive(Clone)]
pub struct NewAppPassword<'a> {
    pub label: &'a str,
    pub tag: &'a str,
    pub password_hash: &'a str,
    pub scram: &'a str,
}

/// A label as typed: trimmed, 1 to `MAX_LABEL_CHARS` characters, no control characters (it is
/// shown in pages, logs and the CLI's output).
pub fn parse_label(raw: &str) -> Result<String> {
    let label = raw.trim();
    if label.is_empty()
        || label.chars().count() > MAX_LABEL_CHARS
        || label.chars().any(char::is_control)
    {
        return Err(crate::StoreError::Invalid(format!(
            "an app password's label is 1 to {MAX_LABEL_CHARS} characters, without control characters"
        )));
    }
    Ok(label.to_string())
}

/// The app passwords' store role.
#[async_trait]
pub trait AppPasswords: Send + Sync {
    /// Stores a new app password: `NotFound` for no such user, `Conflict` when the label is
    /// taken, `Invalid` for a bad label or when the user already has `MAX_APP_PASSWORDS`.
    async fn add_app_password(
        &self,
        address: &Address,
        new: &NewAppPassword<'_>,
    ) -> Result<AppPassword>;
    /// A user's app passwords by label; `NotFound` for no such user.
    async fn list_app_passwords(&self, address: &Address) -> Result<Vec<AppPassword>>;
    /// Deletes an app password and, in the same transaction, the maildrop lock of any POP3
    /// session that logged in with it; how many sessions that ends. `NotFound` for no such
    /// user or label.
    async fn revoke_app_password(&self, address: &Address, label: &str) -> Result<u64>;
    /// Every app password of a user, for a login to check.
    async fn app_password_secrets(&self, user: UserId) -> Result<Vec<AppPasswordSecret>>;
    /// The user's main SCRAM verifier and their app passwords' (first lines), enabled or not:
    /// where a new verifier of the user takes its salt from. `NotFound` for no such user.
    async fn scram_salt_sources(&self, address: &Address) -> Result<(Option<String>, Vec<String>)>;
    /// Records a successful login with an app password (the time is the store's).
    async fn record_app_password_use(
        &self,
        id: i64,
        ip: Option<&str>,
        mechanism: &str,
    ) -> Result<()>;
    /// Marks `lease` as taken by a session that logged in with app password `id`, so revoking
    /// it ends the session. False when the app password is gone (revoked between the login and
    /// now) or the lease is: the session must end.
    async fn bind_lease_to_app_password(&self, lease: &Lease, id: i64) -> Result<bool>;
    /// Whether only app passwords log in for `domain`'s users; `NotFound` for no such domain.
    async fn app_passwords_only(&self, domain: &DomainName) -> Result<bool>;
    async fn set_app_passwords_only(&self, domain: &DomainName, only: bool) -> Result<()>;
}

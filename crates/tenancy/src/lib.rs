//! Who is logging in: `login` turns what a client typed into a mailbox address; `password`
//! hashes and verifies argon2id secrets; `Authenticator` combines the two with the directory,
//! so a failed login costs the same and says the same whichever half was wrong.

mod login;
mod password;

pub use login::parse_login;
pub use password::{HashError, hash_password, verify_password};

use std::sync::Arc;

use mailstore::{Directory, StoreError, UserId};
use tokio::sync::Semaphore;

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown user, malformed login or wrong password: deliberately indistinguishable.
    #[error("authentication failed")]
    Rejected,
    /// The directory could not be asked; the client should retry later.
    #[error("authentication temporarily unavailable: {0}")]
    Unavailable(#[source] StoreError),
}

/// Verifies logins against the directory. argon2 runs on the blocking pool, at most
/// `max_concurrent` at a time, so a burst of logins cannot starve the reactor or exhaust memory
/// (each verification holds ~19 MiB).
pub struct Authenticator {
    directory: Arc<dyn Directory>,
    permits: Arc<Semaphore>,
    /// Verified when the user does not exist, so that case costs what a wrong password costs.
    dummy_hash: Arc<str>,
}

impl Authenticator {
    pub fn new(directory: Arc<dyn Directory>, max_concurrent: usize) -> Result<Self, HashError> {
        Ok(Self {
            directory,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            dummy_hash: hash_password(b"pophost dummy password")?.into(),
        })
    }

    pub async fn authenticate(&self, login: &str, password: &[u8]) -> Result<UserId, AuthError> {
        let user = match parse_login(login) {
            Some(address) => self
                .directory
                .find_user(&address)
                .await
                .map_err(AuthError::Unavailable)?,
            None => None,
        };
        let (id, hash) = match user {
            Some(u) => (Some(u.id), Arc::from(u.password_hash)),
            None => (None, self.dummy_hash.clone()),
        };
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Rejected)?;
        let password = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_password(&password, &hash)
        })
        .await
        .unwrap_or(false);
        match id {
            Some(id) if ok => Ok(id),
            _ => Err(AuthError::Rejected),
        }
    }
}

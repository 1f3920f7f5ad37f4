//! Migration at first login: a domain in migration mode names its old POP3 server, and a user
//! of it whose mail has not been pulled yet logs in with the password the old server knows.
//! The old server checks it (it is the authority until the user is migrated); on success pophost
//! stores the password as argon2id (creating the account if the bulk import did not), pulls the
//! mail, and answers the login. A pull longer than the configured wait goes on in the background
//! while the client is told to come back (`AuthError::Moving`). The old server is only read.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mailstore::{Address, Directory, FailureReason, StoreError, UserAuth, UserId};
use tokio::sync::Semaphore;

use crate::{AuthError, Authenticated, Authenticator, LoginContext};

/// The old server, as migration needs it (`pophost` implements it with the `migrate` crate).
#[async_trait]
pub trait OldServer: Send + Sync {
    /// Whether the old server at `source` accepts `login` and `password`; `Err` when it could
    /// not be asked.
    async fn check(&self, source: &str, login: &str, password: &str) -> Result<bool, String>;
    /// Copies `login`'s maildrop on the old server into `user`'s mailbox, keeping its UIDLs;
    /// copying again adds only what is missing.
    async fn pull(
        &self,
        source: &str,
        user: UserId,
        login: &str,
        password: &str,
    ) -> Result<(), String>;
}

/// Migration at first login, for the `Authenticator`. Clones share the old server, the users
/// being pulled and the connection cap.
#[derive(Clone)]
pub struct Migration {
    server: Arc<dyn OldServer>,
    /// How long a login waits for its pull before it is told to come back.
    wait: Duration,
    /// Users whose pull is under way in this process: another login of theirs waits its turn
    /// rather than starting a second pull.
    pulling: Arc<Mutex<HashSet<UserId>>>,
    /// Connections to old servers (checks and pulls) open at once: a thousand first logins at
    /// once must not become a thousand connections to the old server.
    connections: Arc<Semaphore>,
}

impl Migration {
    /// `max_connections` (at least 1) bounds the checks and pulls under way at once; a login
    /// that cannot get one within `wait` is told to come back.
    pub fn new(server: Arc<dyn OldServer>, wait: Duration, max_connections: usize) -> Self {
        Self {
            server,
            wait,
            pulling: Arc::default(),
            connections: Arc::new(Semaphore::new(max_connections.max(1))),
        }
    }
}

/// What a login knows about a user of a domain in migration mode.
pub(crate) struct Pending<'a> {
    pub(crate) login: &'a str,
    pub(crate) address: Address,
    pub(crate) source: String,
    /// The account, when it exists already.
    pub(crate) user: Option<UserAuth>,
}

impl Authenticator {
    /// A login of a user not migrated yet: checked by the old server, then the mail is pulled.
    pub(crate) async fn migrate(
        &self,
        migration: &Migration,
        pending: Pending<'_>,
        password: &[u8],
        ctx: &LoginContext,
    ) -> Result<Authenticated, AuthError> {
        let attempt = self
            .count_and_wait(Some(pending.address.clone()), ctx)
            .await?;
        let Ok(text) = std::str::from_utf8(password) else {
            self.failed(&attempt, FailureReason::WrongPassword).await;
            return Err(AuthError::Rejected);
        };
        let Ok(Ok(permit)) =
            tokio::time::timeout(migration.wait, migration.connections.acquire()).await
        else {
            return Err(AuthError::Moving);
        };
        let checked = migration
            .server
            .check(&pending.source, pending.login, text)
            .await;
        drop(permit);
        match checked {
            Ok(true) => {}
            // Not the old server's password, but maybe the account's own here (one created
            // in pophost during the migration): that logs in, with nothing to pull.
            Ok(false) => {
                if let Some(user) = &pending.user
                    && self
                        .hashers
                        .verify(password.to_vec(), user.password_hash.as_str().into())
                        .await
                {
                    self.succeeded(&attempt).await;
                    return Ok(Authenticated {
                        user: user.id,
                        address: pending.address,
                    });
                }
                self.failed(&attempt, FailureReason::WrongPassword).await;
                return Err(AuthError::Rejected);
            }
            Err(e) => {
                tracing::warn!(error = %e, source = pending.source, "the old server could not check a login");
                return Err(AuthError::Moving);
            }
        }
        self.succeeded(&attempt).await;
        let user = self.keep_password(&pending, password).await?;
        if !migration
            .pulling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user)
        {
            return Err(AuthError::Moving);
        }
        let pull = tokio::spawn(pull(
            migration.clone(),
            self.directory.clone(),
            pending.source,
            user,
            pending.login.to_string(),
            text.to_string(),
        ));
        match tokio::time::timeout(migration.wait, pull).await {
            Ok(Ok(true)) => Ok(Authenticated {
                user,
                address: pending.address,
            }),
            // Failed (logged by the task) or still running: the next login tries again or finds
            // the mail in place.
            Ok(_) | Err(_) => Err(AuthError::Moving),
        }
    }

    /// Stores the password the old server accepted as the account's own (argon2id and SCRAM),
    /// creating the account when it does not exist yet.
    async fn keep_password(
        &self,
        pending: &Pending<'_>,
        password: &[u8],
    ) -> Result<UserId, AuthError> {
        let Some(secrets) = self.hashers.secrets(password.to_vec()).await else {
            return Err(AuthError::Moving);
        };
        let directory = &self.directory;
        match pending.user.as_ref().map(|u| u.id) {
            Some(user) => {
                directory
                    .set_password(&pending.address, &secrets.hash, Some(&secrets.verifier))
                    .await
                    .map_err(AuthError::Unavailable)?;
                Ok(user)
            }
            None => match directory
                .add_user(&pending.address, &secrets.hash, Some(&secrets.verifier))
                .await
            {
                Ok(user) => {
                    tracing::info!(user = %pending.address, "account created from the old server");
                    Ok(user)
                }
                // A disabled account (find_user does not return it), or a full domain.
                Err(StoreError::Conflict(why)) => {
                    tracing::info!(user = %pending.address, why, "account not created");
                    Err(AuthError::Rejected)
                }
                Err(e) => Err(AuthError::Unavailable(e)),
            },
        }
    }
}

/// Pulls `user`'s mail and records it; true when done. Runs as its own task so that a login
/// that stops waiting does not stop it.
async fn pull(
    migration: Migration,
    directory: Arc<dyn Directory>,
    source: String,
    user: UserId,
    login: String,
    password: String,
) -> bool {
    let pulled = match migration.connections.acquire().await {
        Ok(_permit) => {
            migration
                .server
                .pull(&source, user, &login, &password)
                .await
        }
        Err(_) => Err("closed".to_string()),
    };
    let done = match pulled {
        Ok(()) => match directory.finish_migration(user).await {
            Ok(()) => {
                tracing::info!(source, "mailbox moved from the old server");
                metrics::counter!("pophost_migrated_logins_total").increment(1);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording a finished migration failed");
                false
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, source, "pulling mail from the old server failed");
            false
        }
    };
    migration
        .pulling
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&user);
    done
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mailstore::{DomainName, LockOptions, SqliteStore};

    use super::*;
    use crate::{AuthPolicy, DefaultDomains};

    /// An old server that knows john's password, takes `pull_time` to pull, and counts calls.
    struct Old {
        password: &'static str,
        pull_time: Duration,
        checks: AtomicUsize,
        pulls: AtomicUsize,
    }

    #[async_trait]
    impl OldServer for Old {
        async fn check(&self, source: &str, login: &str, password: &str) -> Result<bool, String> {
            assert_eq!(source, "pop3s://old.example.net");
            self.checks.fetch_add(1, Ordering::SeqCst);
            let known = matches!(login, "john@example.com" | "mary@example.com");
            Ok(known && password == self.password)
        }
        async fn pull(&self, _: &str, _: UserId, _: &str, _: &str) -> Result<(), String> {
            tokio::time::sleep(self.pull_time).await;
            self.pulls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    async fn setup(
        pull_time: Duration,
    ) -> (tempfile::TempDir, Arc<SqliteStore>, Arc<Old>, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), LockOptions::default(), true)
            .await
            .unwrap();
        let store = Arc::new(store);
        let domain = DomainName::parse("example.com").unwrap();
        store.add_domain(&domain).await.unwrap();
        store
            .set_migrate_from(&domain, Some("pop3s://old.example.net"))
            .await
            .unwrap();
        let old = Arc::new(Old {
            password: "old pw",
            pull_time,
            checks: AtomicUsize::new(0),
            pulls: AtomicUsize::new(0),
        });
        let policy = AuthPolicy {
            failure_delay: Duration::ZERO,
            ..AuthPolicy::default()
        };
        let auth = Authenticator::new(store.clone(), 1, DefaultDomains::default(), policy)
            .unwrap()
            .with_migration(Migration::new(old.clone(), Duration::from_millis(300), 1));
        (dir, store, old, auth)
    }

    /// The old server decides until the user is moved; then pophost does, without asking it.
    #[tokio::test]
    async fn a_first_login_creates_the_account_and_pulls_once() {
        let (_dir, store, old, auth) = setup(Duration::ZERO).await;
        let ctx = LoginContext::default();
        let john = Address::parse("john@example.com").unwrap();
        assert!(matches!(
            auth.authenticate("john@example.com", b"wrong", &ctx).await,
            Err(AuthError::Rejected)
        ));
        assert!(
            store.find_user(&john).await.unwrap().is_none(),
            "no account from a wrong password"
        );
        let who = auth
            .authenticate("john@example.com", b"old pw", &ctx)
            .await
            .unwrap();
        assert_eq!(who.address, john);
        let user = store.find_user(&john).await.unwrap().unwrap();
        assert!(user.migrated);
        assert!(user.password_hash.starts_with("$argon2id$"));
        assert_eq!(old.pulls.load(Ordering::SeqCst), 1);
        auth.authenticate("john@example.com", b"old pw", &ctx)
            .await
            .unwrap();
        assert_eq!(old.checks.load(Ordering::SeqCst), 2, "not asked once moved");
        assert_eq!(old.pulls.load(Ordering::SeqCst), 1);
        // An account made here during the migration, unknown to the old server, logs in with
        // its own password.
        let jane = Address::parse("jane@example.com").unwrap();
        let hash = crate::hash_password(b"jane's pw").unwrap();
        store.add_user(&jane, &hash, None).await.unwrap();
        auth.authenticate("jane@example.com", b"jane's pw", &ctx)
            .await
            .unwrap();
        assert!(
            auth.authenticate("jane@example.com", b"old pw", &ctx)
                .await
                .is_err()
        );
        assert_eq!(old.pulls.load(Ordering::SeqCst), 1);
    }

    /// A pull longer than the wait goes on in the background; the client is told to come back,
    /// and a login meanwhile starts no second pull.
    #[tokio::test]
    async fn a_long_pull_answers_moving_and_finishes_in_the_background() {
        let (_dir, store, old, auth) = setup(Duration::from_millis(1500)).await;
        let ctx = LoginContext::default();
        let john = Address::parse("john@example.com").unwrap();
        for _ in 0..2 {
            assert!(matches!(
                auth.authenticate("john@example.com", b"old pw", &ctx).await,
                Err(AuthError::Moving)
            ));
        }
        assert!(!store.find_user(&john).await.unwrap().unwrap().migrated);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(old.pulls.load(Ordering::SeqCst), 1, "one pull");
        assert!(store.find_user(&john).await.unwrap().unwrap().migrated);
        auth.authenticate("john@example.com", b"old pw", &ctx)
            .await
            .unwrap();
    }

    /// One connection to the old server at a time here: while john's pull holds it, mary's
    /// login does not reach the old server and is told to come back; once it is free, she moves.
    #[tokio::test]
    async fn logins_beyond_the_connection_cap_come_back_later() {
        let (_dir, store, old, auth) = setup(Duration::from_millis(1000)).await;
        let ctx = LoginContext::default();
        assert!(matches!(
            auth.authenticate("john@example.com", b"old pw", &ctx).await,
            Err(AuthError::Moving)
        ));
        assert!(matches!(
            auth.authenticate("mary@example.com", b"old pw", &ctx).await,
            Err(AuthError::Moving)
        ));
        assert_eq!(
            old.checks.load(Ordering::SeqCst),
            1,
            "mary waited for john's pull"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let mary = Address::parse("mary@example.com").unwrap();
        assert!(store.find_user(&mary).await.unwrap().is_none());
        assert!(matches!(
            auth.authenticate("mary@example.com", b"old pw", &ctx).await,
            Err(AuthError::Moving)
        ));
        assert_eq!(old.checks.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(store.find_user(&mary).await.unwrap().unwrap().migrated);
        assert_eq!(old.pulls.load(Ordering::SeqCst), 2);
    }
}

//! Who is logging in: `login` turns what a client typed into a mailbox address; `password`
//! hashes and verifies argon2id secrets; `Authenticator` combines the two with the directory,
//! so a failed login costs the same and says the same whichever half was wrong.

pub mod apop;
pub mod app_passwords;
mod defence;
pub mod legacy;
mod login;
mod migration;
mod normalise;
pub mod oauth;
mod password;
mod scram;

pub use apop::{ApopKey, ApopVerifier};
pub use defence::{
    AuthCache, AuthPolicy, Counts, MAX_PASSWORD_BYTES, PAIR_FREE_FAILURES, account_key,
    failure_penalty, network_key, pair_key,
};
pub use login::{DefaultDomains, Login, LoginContext, Resolution, resolve};
pub use migration::{Migration, OldServer};
pub use normalise::normalisation_steps;
pub use password::{
    HashError, Scratch, hash_password, prepare_password, verify_password, verify_password_in,
};
pub use scram::{SCRAM_ITERATIONS, ScramError, ScramExchange, ScramVerifier};

use std::sync::Arc;
use std::time::Duration;

use mailstore::{
    Address, AuthAttempt, Directory, DomainName, FailedLogin, FailureReason, LoginRecord,
    StoreError, UserId,
};
use tokio::sync::oneshot;

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
    /// The mailbox is being moved from the old server (migration at first login), or the old
    /// server could not be asked: the client should retry in a minute.
    #[error("mailbox is being moved")]
    Moving,
}

/// Who a successful login is: the user, and the mailbox its login resolved to (the domain's
/// canonical name, not the alias or the form the client typed), for logs and the session span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub user: UserId,
    pub address: Address,
}

/// Verifies logins against the directory. argon2 runs off the reactor on `max_concurrent`
/// dedicated threads, so a burst of logins can neither starve the reactor nor take more than
/// `max_concurrent` × ~19 MiB. Dedicated threads (not the blocking pool) matter for memory: the
/// allocator keeps a freed argon2 block in the freeing thread's arena for reuse, so a pool that
/// grows to many threads would keep one 19 MiB block per thread it ever used.
pub struct Authenticator {
    directory: Arc<dyn Directory>,
    defaults: DefaultDomains,
    hashers: Hashers,
    policy: AuthPolicy,
    cache: AuthCache,
    /// Verified when the user does not exist, so that case costs what a wrong password costs.
    dummy_hash: Arc<str>,
    /// Attempts of one (network, account) pair take their turn here to be counted and wait out
    /// their penalty (see `count_and_wait`).
    turns: Turns,
    /// Migration at first login, when pophost is set up for it.
    migration: Option<Migration>,
    /// Bearer-token logins (see `oauth`), when the frontend offers them.
    oauth: Option<Arc<oauth::OAuth>>,
    /// The users' app passwords (`with_app_passwords`).
    app_passwords: Option<Arc<dyn mailstore::AppPasswords>>,
}

impl Authenticator {
    pub fn new(
        directory: Arc<dyn Directory>,
        max_concurrent: usize,
        defaults: DefaultDomains,
        policy: AuthPolicy,
    ) -> Result<Self, HashError> {
        Ok(Self {
            directory,
            defaults,
            cache: AuthCache::new(policy.cache_ttl),
            policy,
            hashers: Hashers::start(max_concurrent.max(1))?,
            dummy_hash: hash_password(b"pophost dummy password")?.into(),
            turns: Turns::default(),
            migration: None,
            oauth: None,
            app_passwords: None,
        })
    }

    /// Moves users of domains in migration mode from their old server at their first login.
    pub fn with_migration(mut self, migration: Migration) -> Self {
        self.migration = Some(migration);
        self
    }

    /// Checks a login and password (USER/PASS, SASL PLAIN and LOGIN). Counted and slowed down
    /// by the brute-force defence (see `defence`); a failure is answered only after
    /// `failure_delay`. Unknown users cost the same as wrong passwords. On success, the user
    /// and the mailbox address the login resolved to.
    pub async fn authenticate(
        &self,
        login: &str,
        password: &[u8],
        ctx: &LoginContext,
    ) -> Result<Authenticated, AuthError> {
        self.authenticate_device(login, password, ctx)
            .await
            .map(|(who, _)| who)
    }

    /// `authenticate`, also saying which app password logged in (`None`: the main password).
    /// The main password and each of the user's app passwords log in (the main one not when the
    /// domain requires app passwords); which one failed is never told.
    pub async fn authenticate_device(
        &self,
        login: &str,
        password: &[u8],
        ctx: &LoginContext,
    ) -> Result<(Authenticated, Option<i64>), AuthError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::Rejected);
        }
        let named = self.mailbox(login, ctx).await?;
        let (address, migrate_from) = (named.address, named.migrate_from);
        let user = match &address {
            Some(address) => self
                .directory
                .find_user(address)
                .await
                .map_err(AuthError::Unavailable)?,
            None => None,
        };
        if let (Some(migration), Some(source), Some(address)) =
            (&self.migration, migrate_from, &address)
            && user.as_ref().is_none_or(|u| !u.migrated)
        {
            let pending = migration::Pending {
                login,
                address: address.clone(),
                source,
                user,
            };
            return self
                .migrate(migration, pending, password, ctx)
                .await
                .map(|who| (who, None));
        }
        let mailbox = address
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        // Only the right password hits the cache, so a hit is neither counted nor slowed: a
        // polling client costs no store write, and a guess never gets here.
        if let Some(u) = &user
            && let Some(address) = &address
            && !u.app_passwords_only
            && let Some(id) = self.cache.get(&mailbox, password, &u.password_hash)
        {
            let who = Authenticated {
                user: id,
                address: address.clone(),
            };
            return Ok((who, None));
        }
        if let Some(u) = &user
            && let Some(address) = &address
            && let Some((device, _)) = self
                .app_password_matching(u.id, &mailbox, password, true)
                .await
        {
            let mechanism = ctx.mechanism.unwrap_or("MTA");
            self.app_password_used(device, ctx.peer_ip, mechanism).await;
            let who = Authenticated {
                user: u.id,
                address: address.clone(),
            };
            return Ok((who, Some(device)));
        }
        let mut attempt = self.count_and_wait(address, ctx).await?;
        attempt.refused_by = named.refused_by;
        // A password shaped like an app password is tried against the user's app passwords
        // first (only those whose tag matches get an argon2 check), so a device's login costs
        // one argon2 like a main password's; the main password is checked only when none matched.
        let device = match user.as_ref().map(|u| u.id) {
            Some(id) => self
                .app_password_matching(id, &mailbox, password, false)
                .await
                .map(|(device, _)| device),
            None => None,
        };
        // A domain that requires app passwords still pays for a main-password check (against
        // the dummy hash), so its failures cost what others' do.
        let main_allowed = user.as_ref().is_some_and(|u| !u.app_passwords_only);
        let (id, hash) = match user {
            Some(u) if main_allowed => (Some(u.id), Arc::from(u.password_hash)),
            Some(u) => (Some(u.id), self.dummy_hash.clone()),
            None => (None, self.dummy_hash.clone()),
        };
        let checked =
            device.is_none() && self.hashers.verify(password.to_vec(), hash.clone()).await;
        let ok = main_allowed && checked;
        match (id, attempt.address.clone(), device) {
            (Some(id), Some(address), Some(device)) => {
                self.succeeded(&attempt).await;
                let mechanism = ctx.mechanism.unwrap_or("MTA");
                self.app_password_used(device, ctx.peer_ip, mechanism).await;
                Ok((Authenticated { user: id, address }, Some(device)))
            }
            (Some(id), Some(address), None) if ok => {
                self.succeeded(&attempt).await;
                let hash = self.upgrade(id, password, hash).await;
                self.cache.put(&mailbox, password, &hash, id);
                Ok((Authenticated { user: id, address }, None))
            }
            _ => {
                self.failed(&attempt, FailureReason::WrongPassword).await;
                Err(AuthError::Rejected)
            }
        }
    }

    /// After a login verified `hash`: a hash imported from another server is replaced with
    /// pophost's argon2id and a SCRAM verifier derived from the password just typed, so the
    /// legacy scheme is gone from the store at the account's first login. Returns the hash the
    /// account holds now. A failure to upgrade does not fail the login: the next one tries again.
    async fn upgrade(&self, user: UserId, password: &[u8], hash: Arc<str>) -> Arc<str> {
        let Some(scheme) = mailstore::password_scheme(&hash) else {
            return hash;
        };
        let scheme = scheme.to_string();
        let Some(secrets) = self.hashers.secrets(password.to_vec()).await else {
            tracing::warn!(scheme, "hashing an imported password anew failed");
            return hash;
        };
        let secrets = self
            .keeping_app_password_salt(user, password, secrets)
            .await;
        match self
            .directory
            .upgrade_password(user, &hash, &secrets.hash, &secrets.verifier)
            .await
        {
            Ok(true) => {
                tracing::info!(scheme, "imported password hash replaced with argon2id");
                metrics::counter!("pophost_legacy_hash_upgrades_total", "scheme" => scheme)
                    .increment(1);
                secrets.hash.into()
            }
            // The password was changed since this login read it: the new one stands.
            Ok(false) => hash,
            Err(e) => {
                tracing::warn!(error = %e, scheme, "replacing an imported password hash failed");
                hash
            }
        }
    }

    /// A failed attempt stays counted (it was counted before its check); its answer waits the
    /// failure delay. A frontend that names the mechanism has it recorded in the login history
    /// meanwhile, so the reply's timing does not depend on what the store had to look up (a
    /// mailbox that does not exist takes another statement). `reason` is for a login that named
    /// a mailbox; the store tells an unknown or disabled one from a wrong password.
    pub(crate) async fn failed(&self, attempt: &Attempt, reason: FailureReason) {
        let record = async {
            let Some(login) = &attempt.login else {
                return;
            };
            let (reason, domain) = match (&attempt.address, &attempt.refused_by) {
                (Some(_), _) => (reason, None),
                (None, Some(domain)) => (FailureReason::LoginForm, Some(domain.clone())),
                (None, None) => (FailureReason::UnknownUser, None),
            };
            let failure = FailedLogin {
                login: login.clone(),
                address: attempt.address.clone(),
                domain,
                reason,
            };
            if let Err(e) = self.directory.record_failed_login(&failure).await {
                tracing::warn!(error = %e, "recording a failed login failed");
            }
        };
        tokio::join!(record, tokio::time::sleep(self.policy.failure_delay));
    }

    /// A successful attempt is no failure: forgets it, and the failures of its (network,
    /// account) pair — someone at that network knows the password. The network's and the
    /// account's other failures stay.
    pub(crate) async fn succeeded(&self, attempt: &Attempt) {
        let clear: Vec<String> = attempt.pair.iter().cloned().collect();
        if let Err(e) = self
            .directory
            .forget_auth_attempt(&attempt.counted, &clear)
            .await
        {
            tracing::warn!(error = %e, "forgetting a successful login attempt failed");
        }
    }

    /// The start of every login attempt, whatever the mechanism: resolve the name, count the
    /// attempt and wait out the brute-force penalty.
    pub(crate) async fn begin(
        &self,
        login: &str,
        ctx: &LoginContext,
    ) -> Result<Attempt, AuthError> {
        let named = self.mailbox(login, ctx).await?;
        let mut attempt = self.count_and_wait(named.address, ctx).await?;
        attempt.refused_by = named.refused_by;
        Ok(attempt)
    }

    /// The mailbox a login names, if any, and its domain's old server in migration mode.
    async fn mailbox(&self, login: &str, ctx: &LoginContext) -> Result<Named, AuthError> {
        let resolution = resolve(&*self.directory, login, &self.defaults, ctx)
            .await
            .map_err(AuthError::Unavailable)?;
        let mut named = Named::default();
        match resolution {
            Resolution::Mailbox {
                address,
                migrate_from,
                ..
            } => {
                named.address = Some(address);
                named.migrate_from = migrate_from;
            }
            Resolution::FormNotAllowed(_, domain) => named.refused_by = Some(domain),
            Resolution::Malformed | Resolution::NoDomain(_) | Resolution::UnknownDomain(..) => {}
        }
        Ok(named)
    }

    /// Counts the attempt under its network, (network, account) pair and account — before its
    /// check, so that attempts made at the same time see each other — then waits the penalty
    /// for the attempts counted before it.
    async fn count_and_wait(
        &self,
        address: Option<Address>,
        ctx: &LoginContext,
    ) -> Result<Attempt, AuthError> {
        const HOUR: Duration = Duration::from_secs(3600);
        let network = ctx.peer_ip.map(network_key);
        let account = address.as_ref().map(account_key);
        let pair = network
            .as_deref()
            .zip(account.as_deref())
            .map(|(n, a)| pair_key(n, a));
        let keys: Vec<String> = [&network, &pair, &account]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        // Counting alone lets attempts made at once see each other, but they would still wait
        // their penalties side by side: twenty connections would guess twenty times as fast as
        // one. One at a time per pair (or per network when the name is no account), each waits
        // out its penalty before the next is counted, so concurrency buys an attacker nothing.
        // Per frontend: a pair's guesses spread over N frontends go N at a time.
        let turn = pair.as_ref().or(network.as_ref()).cloned();
        let _turn = match turn {
            Some(key) => Some(self.turns.take(key).await),
            None => None,
        };
        let (counted, counts) = self
            .directory
            .count_auth_attempt(&keys, HOUR)
            .await
            .map_err(AuthError::Unavailable)?;
        // Each count includes this attempt; the penalty is for the ones before it.
        let mut counts = counts.into_iter().map(|n| n.saturating_sub(1));
        let mut next = |has: bool| if has { counts.next().unwrap_or(0) } else { 0 };
        let before = Counts {
            network: next(network.is_some()),
            pair: next(pair.is_some()),
            account: next(account.is_some()),
        };
        let penalty = self.policy.wait(before);
        if !penalty.is_zero() {
            // Seen on the service's dashboards: a rising rate means someone is guessing.
            metrics::counter!("pophost_auth_penalties_total").increment(1);
        }
        tokio::time::sleep(penalty).await;
        Ok(Attempt {
            address,
            counted,
            pair,
            refused_by: None,
            login: ctx.mechanism.map(|mechanism| LoginRecord {
                ip: ctx.peer_ip,
                mechanism: mechanism.to_string(),
                tls: ctx.tls,
            }),
        })
    }
}

/// What a login names, as far as the directory tells.
#[derive(Default)]
struct Named {
    address: Option<Address>,
    migrate_from: Option<String>,
    /// The domain whose login forms refuse the form typed.
    refused_by: Option<DomainName>,
}

/// One queue per key: `take` waits until no other attempt of the key holds its turn. A key's
/// entry goes when its last waiter does, so the map holds only keys with attempts under way.
#[derive(Default)]
struct Turns(std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// A held turn; dropping it lets the key's next attempt go.
struct Turn<'a> {
    turns: &'a Turns,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Turns {
    async fn take(&self, key: String) -> Turn<'_> {
        let queue = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = queue.lock_owned().await;
        Turn {
            turns: self,
            key,
            guard: Some(guard),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut map = self.turns.0.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.guard.take());
        // Only the map's own handle left: nobody holds or waits for this key.
        if map
            .get(&self.key)
            .is_some_and(|q| Arc::strong_count(q) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// A login attempt under way: the mailbox its name resolved to (if any), and how it was
/// counted.
pub(crate) struct Attempt {
    pub(crate) address: Option<Address>,
    counted: AuthAttempt,
    /// The (network, account) counter, which a success clears.
    pair: Option<String>,
    /// The domain that refused the login form, when that is why no mailbox was named.
    refused_by: Option<DomainName>,
    /// How the client logged in, when the frontend keeps a login history (see `failed`).
    pub(crate) login: Option<LoginRecord>,
}

/// What a mailbox stores of a password: its argon2id hash and its SCRAM-SHA-256 verifier,
/// derived together so that they always belong to the same password.
pub struct Secrets {
    pub hash: String,
    pub verifier: String,
}

impl Secrets {
    /// Both take tens of milliseconds of CPU: call it off the reactor.
    pub fn derive(password: &[u8]) -> Result<Self, HashError> {
        Ok(Self {
            hash: hash_password(password)?,
            verifier: ScramVerifier::derive(password).to_string(),
        })
    }
}

/// Work for a hashing thread.
enum Job {
    Verify {
        password: Vec<u8>,
        hash: Arc<str>,
        reply: oneshot::Sender<bool>,
    },
    Derive {
        password: Vec<u8>,
        reply: oneshot::Sender<Option<Secrets>>,
    },
}

/// A fixed set of threads for password hashing, fed from one queue; each keeps its own argon2
/// memory for reuse.
struct Hashers {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Hashers {
    fn start(threads: usize) -> Result<Self, HashError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let worker = move || {
                let mut scratch = Scratch::default();
                loop {
                    // The lock is held only while taking a job, not while running it.
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else {
                        return; // the Authenticator is gone
                    };
                    match job {
                        Job::Verify {
                            password,
                            hash,
                            reply,
                        } => {
                            let _ = reply.send(verify_password_in(&password, &hash, &mut scratch));
                        }
                        Job::Derive { password, reply } => {
                            let _ = reply.send(Secrets::derive(&password).ok());
                        }
                    }
                }
            };
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(worker)
                .map_err(|e| HashError::new(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Self { jobs })
    }

    /// Verifies on a hashing thread; false if none could run it.
    async fn verify(&self, password: Vec<u8>, hash: Arc<str>) -> bool {
        let (reply, answer) = oneshot::channel();
        let job = Job::Verify {
            password,
            hash,
            reply,
        };
        if self.jobs.send(job).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// Derives a password's secrets on a hashing thread; `None` if that failed.
    async fn secrets(&self, password: Vec<u8>) -> Option<Secrets> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job::Derive { password, reply }).ok()?;
        answer.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailstore::{Admin, DomainName, LockOptions, SqliteStore};

    /// A login names the mailbox it reached by the domain's own name, whichever alias or form
    /// the client typed: that is what the session logs.
    #[tokio::test]
    async fn a_login_through_an_alias_authenticates_the_canonical_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), LockOptions::default(), true)
            .await
            .unwrap();
        let store = Arc::new(store);
        let domain = DomainName::parse("example.com").unwrap();
        store.add_domain(&domain).await.unwrap();
        let alias = DomainName::parse("example.net").unwrap();
        store.add_alias(&alias, &domain).await.unwrap();
        let john = Address::parse("john@example.com").unwrap();
        let hash = hash_password(b"pw").unwrap();
        let id = store.add_user(&john, &hash, None).await.unwrap();
        let policy = AuthPolicy {
            failure_delay: Duration::ZERO,
            ..AuthPolicy::default()
        };
        let auth = Authenticator::new(store, 1, DefaultDomains::default(), policy).unwrap();
        let ctx = LoginContext::default();
        for login in ["john@example.net", "John+Example.NET", "john@example.com"] {
            let who = auth.authenticate(login, b"pw", &ctx).await.unwrap();
            assert_eq!(
                who,
                Authenticated {
                    user: id,
                    address: john.clone()
                },
                "{login}"
            );
        }
        assert!(matches!(
            auth.authenticate("john@example.net", b"wrong", &ctx).await,
            Err(AuthError::Rejected)
        ));
    }

    /// A frontend that names the mechanism gets each failure in the user's login history,
    /// with why it failed; one that names none (the MTA's auth service) records nothing.
    #[tokio::test]
    async fn failures_are_recorded_with_their_reason_when_a_mechanism_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), LockOptions::default(), true)
            .await
            .unwrap();
        let store = Arc::new(store);
        let domain = DomainName::parse("example.com").unwrap();
        store.add_domain(&domain).await.unwrap();
        let john = Address::parse("john@example.com").unwrap();
        store
            .add_user(&john, &hash_password(b"pw").unwrap(), None)
            .await
            .unwrap();
        let policy = AuthPolicy {
            failure_delay: Duration::ZERO,
            ..AuthPolicy::default()
        };
        let auth = Authenticator::new(store.clone(), 1, DefaultDomains::default(), policy).unwrap();
        let pop3 = LoginContext {
            peer_ip: Some("192.0.2.7".parse().unwrap()),
            tls: true,
            mechanism: Some("PLAIN"),
            ..LoginContext::default()
        };
        let history = || async {
            let activity = store.user_activity(&john).await.unwrap().unwrap();
            activity
                .logins
                .into_iter()
                .map(|e| (e.failure.map(|f| f.as_str().to_string()), e.ip, e.tls))
                .collect::<Vec<_>>()
        };
        let ip = Some("192.0.2.7".to_string());
        assert!(
            auth.authenticate("john@example.com", b"no", &pop3)
                .await
                .is_err()
        );
        assert_eq!(
            history().await,
            vec![(Some("wrong_password".into()), ip.clone(), true)]
        );
        store.set_user_enabled(&john, false).await.unwrap();
        assert!(
            auth.authenticate("john@example.com", b"pw", &pop3)
                .await
                .is_err()
        );
        assert_eq!(history().await[0].0.as_deref(), Some("disabled"));
        store.set_user_enabled(&john, true).await.unwrap();
        let mta = LoginContext {
            mechanism: None,
            ..pop3.clone()
        };
        assert!(
            auth.authenticate("john@example.com", b"no", &mta)
                .await
                .is_err()
        );
        assert_eq!(
            history().await.len(),
            2,
            "nothing recorded without a mechanism"
        );
    }

    /// A login against an imported hash replaces it with argon2id and a SCRAM verifier, once;
    /// a wrong password changes nothing, and the password keeps working after the upgrade.
    #[tokio::test]
    async fn the_first_login_replaces_an_imported_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), LockOptions::default(), true)
            .await
            .unwrap();
        let store = Arc::new(store);
        store
            .add_domain(&DomainName::parse("example.com").unwrap())
            .await
            .unwrap();
        let john = Address::parse("john@example.com").unwrap();
        // doveadm pw -s SHA512-CRYPT -p "old secret"
        let imported = "{SHA512-CRYPT}$6$6xEdIWpBa.CMYZyZ$YmT7obFtC2Ay9IXlJy2qhz2Qx99DBH0rXO6A8nAmJ8GYDxd8pNMrbfW9fJm5qq/K0I3RTLkpjzdiE8UYUYaE5.";
        store.add_user(&john, imported, None).await.unwrap();
        let policy = AuthPolicy {
            failure_delay: Duration::ZERO,
            ..AuthPolicy::default()
        };
        let auth = Authenticator::new(store.clone(), 1, DefaultDomains::default(), policy).unwrap();
        let ctx = LoginContext::default();
        let held = || async { store.find_user(&john).await.unwrap().unwrap() };
        assert!(
            auth.authenticate("john@example.com", b"old secre", &ctx)
                .await
                .is_err()
        );
        assert_eq!(held().await.password_hash, imported);
        auth.authenticate("john@example.com", b"old secret", &ctx)
            .await
            .unwrap();
        let now = held().await;
        assert!(
            now.password_hash.starts_with("$argon2id$"),
            "{}",
            now.password_hash
        );
        assert!(verify_password(b"old secret", &now.password_hash));
        let verifier = ScramVerifier::parse(now.scram.as_deref().unwrap()).unwrap();
        let derived = verifier.to_string();
        assert!(derived.starts_with("SCRAM-SHA-256$4096:"), "{derived}");
        assert_eq!(
            store
                .user_detail(&john)
                .await
                .unwrap()
                .unwrap()
                .password_scheme,
            None
        );
        auth.authenticate("john@example.com", b"old secret", &ctx)
            .await
            .unwrap();
        assert_eq!(
            held().await.password_hash,
            now.password_hash,
            "upgraded once"
        );
    }
}

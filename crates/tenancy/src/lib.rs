//! Who is logging in: `login` turns what a client typed into a mailbox address; `password`
//! hashes and verifies argon2id secrets; `Authenticator` combines the two with the directory,
//! so a failed login costs the same and says the same whichever half was wrong.

pub mod apop;
mod defence;
mod login;
mod password;
mod scram;

pub use apop::{ApopKey, ApopVerifier};
pub use defence::{
    AuthCache, AuthPolicy, MAX_PASSWORD_BYTES, account_key, ip_penalty, network_key,
};
pub use login::{DefaultDomains, Login, LoginContext, Resolution, resolve};
pub use password::{HashError, Scratch, hash_password, verify_password, verify_password_in};
pub use scram::{SCRAM_ITERATIONS, ScramError, ScramExchange, ScramVerifier};

use std::sync::Arc;
use std::time::Duration;

use mailstore::{Directory, StoreError, UserId};
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
        })
    }

    /// Checks a login and password (USER/PASS, SASL PLAIN and LOGIN). Slowed down by the
    /// failures recorded for the client's network and the account; a failure is recorded and
    /// answered only after `failure_delay`. Unknown users cost the same as wrong passwords.
    pub async fn authenticate(
        &self,
        login: &str,
        password: &[u8],
        ctx: &LoginContext,
    ) -> Result<UserId, AuthError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::Rejected);
        }
        let Attempt { address, keys } = self.begin(login, ctx).await?;
        let user = match &address {
            Some(address) => self
                .directory
                .find_user(address)
                .await
                .map_err(AuthError::Unavailable)?,
            None => None,
        };
        let mailbox = address
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        if let Some(u) = &user
            && let Some(id) = self.cache.get(&mailbox, password, &u.password_hash)
        {
            return Ok(id);
        }
        let (id, hash) = match user {
            Some(u) => (Some(u.id), Arc::from(u.password_hash)),
            None => (None, self.dummy_hash.clone()),
        };
        let ok = self.hashers.verify(password.to_vec(), hash.clone()).await;
        match id {
            Some(id) if ok => {
                self.cache.put(&mailbox, password, &hash, id);
                Ok(id)
            }
            _ => {
                self.failed(&keys).await;
                Err(AuthError::Rejected)
            }
        }
    }

    /// Records a failed login under `keys`, then waits the failure delay before the answer.
    pub(crate) async fn failed(&self, keys: &[String]) {
        if let Err(e) = self.directory.record_auth_failure(keys).await {
            tracing::warn!(error = %e, "recording a failed login failed");
        }
        tokio::time::sleep(self.policy.failure_delay).await;
    }

    /// The start of every login attempt, whatever the mechanism: resolve the name, wait out the
    /// brute-force penalty, and name the counters a failure goes under.
    pub(crate) async fn begin(
        &self,
        login: &str,
        ctx: &LoginContext,
    ) -> Result<Attempt, AuthError> {
        let resolution = resolve(&*self.directory, login, &self.defaults, ctx)
            .await
            .map_err(AuthError::Unavailable)?;
        let address = match resolution {
            Resolution::Mailbox { address, .. } => Some(address),
            _ => None,
        };
        let mut keys = Vec::with_capacity(2);
        keys.extend(ctx.peer_ip.map(network_key));
        keys.extend(address.as_ref().map(account_key));
        let penalty = self.penalty(ctx, &keys).await?;
        if !penalty.is_zero() {
            // Seen on the service's dashboards: a rising rate means someone is guessing.
            metrics::counter!("pophost_auth_penalties_total").increment(1);
        }
        tokio::time::sleep(penalty).await;
        Ok(Attempt { address, keys })
    }

    /// The wait before an attempt: the client network's growing penalty, plus the account's
    /// when it has had too many failures this hour. `keys` are the attempt's counters: the
    /// network's if the client's address is known, then the account's if the name resolved.
    async fn penalty(&self, ctx: &LoginContext, keys: &[String]) -> Result<Duration, AuthError> {
        const HOUR: Duration = Duration::from_secs(3600);
        let counts = self
            .directory
            .auth_failures(keys, HOUR)
            .await
            .map_err(AuthError::Unavailable)?;
        let mut counts = counts.into_iter();
        let mut wait = Duration::ZERO;
        if ctx.peer_ip.is_some() {
            let failures = counts.next().unwrap_or(0);
            wait += ip_penalty(failures, self.policy.ip_penalty_max);
        }
        if let Some(failures) = counts.next()
            && failures >= self.policy.account_failures_per_hour
        {
            wait += self.policy.account_penalty;
        }
        Ok(wait)
    }
}

/// A login attempt under way: the mailbox its name resolved to (if any), and the failure-counter
/// keys (client network, account).
pub(crate) struct Attempt {
    pub(crate) address: Option<mailstore::Address>,
    pub(crate) keys: Vec<String>,
}

/// One verification for a hashing thread.
struct Job {
    password: Vec<u8>,
    hash: Arc<str>,
    reply: oneshot::Sender<bool>,
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
                    let ok = verify_password_in(&job.password, &job.hash, &mut scratch);
                    let _ = job.reply.send(ok);
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
        if self
            .jobs
            .send(Job {
                password,
                hash,
                reply,
            })
            .is_err()
        {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

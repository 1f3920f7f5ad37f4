//! Who is logging in: `login` turns what a client typed into a mailbox address; `password`
//! hashes and verifies argon2id secrets; `Authenticator` combines the two with the directory,
//! so a failed login costs the same and says the same whichever half was wrong.

mod login;
mod password;

pub use login::{DefaultDomains, Login, LoginContext, Resolution, resolve};
pub use password::{HashError, Scratch, hash_password, verify_password, verify_password_in};

use std::sync::Arc;

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
    /// Verified when the user does not exist, so that case costs what a wrong password costs.
    dummy_hash: Arc<str>,
}

impl Authenticator {
    pub fn new(
        directory: Arc<dyn Directory>,
        max_concurrent: usize,
        defaults: DefaultDomains,
    ) -> Result<Self, HashError> {
        Ok(Self {
            directory,
            defaults,
            hashers: Hashers::start(max_concurrent.max(1))?,
            dummy_hash: hash_password(b"pophost dummy password")?.into(),
        })
    }

    pub async fn authenticate(
        &self,
        login: &str,
        password: &[u8],
        ctx: &LoginContext,
    ) -> Result<UserId, AuthError> {
        let resolution = resolve(&*self.directory, login, &self.defaults, ctx)
            .await
            .map_err(AuthError::Unavailable)?;
        let user = match resolution {
            Resolution::Mailbox { address, .. } => self
                .directory
                .find_user(&address)
                .await
                .map_err(AuthError::Unavailable)?,
            _ => None,
        };
        let (id, hash) = match user {
            Some(u) => (Some(u.id), Arc::from(u.password_hash)),
            None => (None, self.dummy_hash.clone()),
        };
        let ok = self.hashers.verify(password.to_vec(), hash).await;
        match id {
            Some(id) if ok => Ok(id),
            _ => Err(AuthError::Rejected),
        }
    }
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

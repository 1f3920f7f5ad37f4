//! The lock `pophost serve` holds for as long as it runs: an exclusive `flock` on a file next to
//! the SQLite database (on Postgres, in the data directory), with the holder's pid in it. A
//! second server on the same store is refused before it touches anything; the kernel drops the
//! lock when its process dies, kill -9 included, so a restart never waits for it. The CLI
//! commands do not take it: they work beside a running server.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::anyhow;

use crate::config::{Database, Settings};

/// Held until dropped.
pub struct ServeLock {
    _file: Option<File>,
    claimant: mailstore::Claimant,
}

/// Why the lock was not taken.
enum Refused {
    /// Another live process holds it.
    Held(anyhow::Error),
    /// The file could not be made or locked.
    Io(anyhow::Error),
}

impl ServeLock {
    /// Takes the lock for `settings`' store, or fails naming the process that holds it.
    pub fn acquire(settings: &Settings) -> anyhow::Result<ServeLock> {
        let host = crate::hostname().unwrap_or_else(|| "localhost".into());
        match &settings.database {
            Database::Sqlite(db) => {
                let mut path = db.clone().into_os_string();
                path.push(".lock");
                let serving = absolute(db).display().to_string();
                Self::at(&PathBuf::from(path), &serving, host).map_err(|e| match e {
                    Refused::Held(e) | Refused::Io(e) => e,
                })
            }
            Database::Postgres(..) => {
                let dir = &settings.data_dir;
                let serving = format!("from data directory {}", absolute(dir).display());
                match Self::at(&dir.join("pophost.lock"), &serving, host.clone()) {
                    Ok(lock) => Ok(lock),
                    Err(Refused::Held(e)) => Err(e),
                    // A frontend whose data directory is read-only still runs: its node claim
                    // in the store keeps a second server out. Only its restarts after a crash
                    // wait for the old claim to lapse (see `mailstore::Claimant`).
                    Err(Refused::Io(e)) => {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "no serve lock: a restart after a crash waits up to \
                             locks.ttl_secs for this server's node claim to lapse"
                        );
                        // Matches no earlier claim: this process's own, pid and start time.
                        let started = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos());
                        let unique = format!("{}:{started}", std::process::id());
                        Ok(ServeLock {
                            _file: None,
                            claimant: mailstore::Claimant {
                                serve_lock: format!("{host}:none:{unique}"),
                                host,
                            },
                        })
                    }
                }
            }
        }
    }

    fn at(path: &Path, serving: &str, host: String) -> Result<ServeLock, Refused> {
        let io = |what: &str, e: std::io::Error| {
            Refused::Io(anyhow!(e).context(format!("{what} {}", path.display())))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io("cannot create the directory of", e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("cannot open the lock file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let pid = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "pid unknown".into(),
                };
                return Err(Refused::Held(anyhow!(
                    "another pophost ({pid}) is serving {serving} (it holds {}): stop it first; \
                     the other pophost commands work beside it",
                    path.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(io("cannot lock", e)),
        }
        // Not read: the cursor is still at the start.
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| io("cannot write", e))?;
        let meta = file.metadata().map_err(|e| io("cannot stat", e))?;
        Ok(ServeLock {
            _file: Some(file),
            claimant: mailstore::Claimant {
                serve_lock: format!("{host}:{}:{}", meta.dev(), meta.ino()),
                host,
            },
        })
    }

    /// This server, as the store's node claim records it.
    pub fn claimant(&self) -> &mailstore::Claimant {
        &self.claimant
    }
}

/// `path` from the root, for messages; as given if that fails.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

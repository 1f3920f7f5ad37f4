//! Moving a maildrop in from an old POP3 server (`pophost migrate pop3`, and migration at first
//! login): every message is read with UIDL and RETR — never DELE, nothing is written to the old
//! server — and stored with the UIDL the old server showed, so leave-on-server clients download
//! nothing again. UIDLs already in the pophost mailbox are not fetched, so a second run (after an
//! interruption, or to pick up mail that arrived meanwhile) reads only what is new.
//!
//! `source` parses the URL and builds the TLS client config (ring, TLS 1.2+, the system's CA
//! certificates or `--ca-file`); `client` is the POP3 client, with a bound on every line,
//! listing, message and read; `pull` stores through the store's `Policies::import` in batches,
//! as `pophost import` does.

mod client;
mod source;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mailstore::{ImportMessage, ImportOutcome, Maildrops, Policies, UserId};

pub use source::{MAX_MESSAGE_OCTETS, Source, TlsOptions};

use client::{Client, Login};

/// At most this many messages, or about this many octets, go to the store per transaction.
const BATCH_MESSAGES: usize = 500;
const BATCH_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--from` URL or the TLS options.
    #[error("{0}")]
    Url(String),
    /// The CA file or the TLS setup.
    #[error("{0}")]
    Config(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0} timed out after {secs} s", secs = .1.as_secs())]
    Timeout(&'static str, Duration),
    /// The handshake failed, certificate verification included.
    #[error("TLS with {host} failed: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("talking to the old server: {0}")]
    Io(std::io::Error),
    #[error("the old server closed the connection")]
    Closed,
    /// The old server broke the protocol or a limit.
    #[error("{0}")]
    Protocol(String),
    #[error("the old server does not offer STLS: {0}")]
    NoStls(String),
    /// The old server refused the login and password.
    #[error("the old server refused the login: {0}")]
    LoginRefused(String),
    /// The old server will not serve the maildrop now (a greeting or login -ERR with
    /// `[IN-USE]`, `[LOGIN-DELAY]`, `[SYS/TEMP]` or `[SYS/PERM]`), whatever the password.
    #[error("the old server cannot serve the maildrop now: {0}")]
    Unavailable(String),
    /// A message over `MAX_MESSAGE_OCTETS`, found while reading it (one the old server's LIST
    /// already shows too large is not read, and is listed in `Report::too_large`).
    #[error("message {number} is larger than {limit} octets{}", .octets.map(|o| format!(" ({o})")).unwrap_or_default())]
    TooLarge {
        number: u32,
        octets: Option<u64>,
        limit: usize,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("storing in pophost: {0}")]
    Store(#[from] mailstore::StoreError),
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Messages the old server listed.
    pub listed: u64,
    /// Messages stored (renumbered ones included).
    pub added: u64,
    /// Octets stored.
    pub octets: u64,
    /// Messages skipped because the mailbox already has their UIDL (or, for a UIDL RFC 1939
    /// forbids, because an earlier pull stored them).
    pub present: u64,
    /// Messages stored under a new UIDL because theirs breaks RFC 1939 (or is listed twice):
    /// clients will download these again.
    pub renumbered: u64,
    /// Messages read with RETR.
    pub fetched: u64,
    /// `(UIDL, octets)` of messages the old server's LIST shows over `MAX_MESSAGE_OCTETS`: not
    /// copied.
    pub too_large: Vec<(String, u64)>,
}

/// Where a pull is, for a progress display.
#[derive(Debug)]
pub struct Progress<'a> {
    /// Messages to fetch in this pull (listed, less those present).
    pub to_fetch: u64,
    pub report: &'a Report,
}

/// Ok(true): the old server accepted login/password; Ok(false): it refused them (-ERR to
/// PASS/AUTH); Err: could not ask (network, TLS, protocol, or an `Unavailable` answer).
pub async fn check_login(source: &Source, login: &str, password: &str) -> Result<bool, Error> {
    let mut client = Client::connect(source).await?;
    let login = client.login(login, password).await?;
    client.quit().await;
    Ok(login == Login::Accepted)
}

/// Copies the maildrop of `login` on the old server into `user`'s pophost mailbox.
pub async fn pull(
    store: &dyn Policies,
    maildrops: &dyn Maildrops,
    user: UserId,
    source: &Source,
    login: &str,
    password: &str,
) -> Result<Report, Error> {
    pull_with(store, maildrops, user, source, login, password, &|_| {}).await
}

/// `pull`, calling `progress` once the listing is read and after each message fetched.
pub async fn pull_with(
    store: &dyn Policies,
    maildrops: &dyn Maildrops,
    user: UserId,
    source: &Source,
    login: &str,
    password: &str,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Report, Error> {
    let have: HashSet<String> = maildrops
        .list(user)
        .await?
        .into_iter()
        .map(|m| m.uid)
        .collect();
    let mut client = Client::connect(source).await?;
    if let Login::Refused(text) = client.login(login, password).await? {
        return Err(Error::LoginRefused(text));
    }
    let listing = client.uidl().await?;
    let sizes: HashMap<u32, u64> = client.list().await?.into_iter().collect();
    let mut report = Report {
        listed: listing.len() as u64,
        ..Report::default()
    };
    let todo = plan(listing, &have, &mut report);
    let cap = source.limits.message as u64;
    let to_fetch = todo
        .iter()
        .filter(|m| sizes.get(&m.number).is_none_or(|&s| s <= cap))
        .count() as u64;
    progress(Progress {
        to_fetch,
        report: &report,
    });
    let mut batch: Vec<ImportMessage> = Vec::new();
    let mut bytes = 0;
    for m in todo {
        if let Some(&size) = sizes.get(&m.number)
            && size > cap
        {
            report.too_large.push((m.uid, size));
            continue;
        }
        let data = match client.retr(m.number).await {
            Ok(data) => data,
            Err(e) => {
                // What was read is kept: the next run need not read it again.
                store_batch(store, user, &mut batch, &mut report).await?;
                progress(Progress {
                    to_fetch,
                    report: &report,
                });
                return Err(e);
            }
        };
        report.fetched += 1;
        bytes += data.len();
        batch.push(ImportMessage {
            key: m.key,
            uid: Some(m.uid),
            data,
        });
        if batch.len() >= BATCH_MESSAGES || bytes >= BATCH_BYTES {
            store_batch(store, user, &mut batch, &mut report).await?;
            bytes = 0;
        }
        progress(Progress {
            to_fetch,
            report: &report,
        });
    }
    store_batch(store, user, &mut batch, &mut report).await?;
    client.quit().await;
    progress(Progress {
        to_fetch,
        report: &report,
    });
    Ok(report)
}

/// A message to fetch.
#[derive(Debug, PartialEq, Eq)]
struct Wanted {
    number: u32,
    uid: String,
    /// The import key: names the message on the old server, so storing it twice is noticed.
    key: String,
}

/// The messages of `listing` whose UIDL the mailbox does not have, counting the others as
/// present. A UIDL listed twice (a broken server) keys its later copies by occurrence.
fn plan(listing: Vec<(u32, String)>, have: &HashSet<String>, report: &mut Report) -> Vec<Wanted> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut todo = Vec::new();
    for (number, uid) in listing {
        let n = seen.entry(uid.clone()).or_default();
        *n += 1;
        if have.contains(&uid) {
            report.present += 1;
            continue;
        }
        let key = match *n {
            1 => format!("pop3:{uid}"),
            n => format!("pop3:{uid}#{n}"),
        };
        todo.push(Wanted { number, uid, key });
    }
    todo
}

async fn store_batch(
    store: &dyn Policies,
    user: UserId,
    batch: &mut Vec<ImportMessage>,
    report: &mut Report,
) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let outcomes = store.import(user, batch).await?;
    for (m, outcome) in batch.iter().zip(outcomes) {
        match outcome {
            ImportOutcome::Added { .. } => {
                report.added += 1;
                report.octets += m.data.len() as u64;
            }
            ImportOutcome::Present => report.present += 1,
            ImportOutcome::Renumbered { old, uid, reason } => {
                tracing::info!(old, uid, reason, "UIDL renumbered");
                report.added += 1;
                report.renumbered += 1;
                report.octets += m.data.len() as u64;
            }
        }
    }
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests;

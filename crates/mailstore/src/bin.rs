//! The recycle bin (issue 21): a message deleted over POP3, by retention or by an admin is kept
//! in its user's bin for the domain's `bin_days` (0 turns the bin off: deletes are final) instead
//! of vanishing. It leaves the maildrop (STAT, LIST, UIDL never see it) and counts against quota
//! only when the domain's `bin_counts_quota` says so. The help desk lists a bin, restores from it
//! (with the original UIDL, so the client that deleted a message does not fetch it again, or as
//! new) and purges it; the retention job purges what is older than `bin_days`. Removing a user or
//! a domain deletes their bin with their mail.

use async_trait::async_trait;

use crate::{Address, DomainName, Page, Result, StoreError};

/// Days a binned message is kept when a domain says nothing else.
pub const DEFAULT_BIN_DAYS: u32 = 7;

/// The most `bin_days` may be: a bin is for "my mail is gone", not an archive.
pub const MAX_BIN_DAYS: u32 = 3650;

/// What put a message in the bin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOrigin {
    /// DELE then QUIT in a POP3 session.
    Pop3,
    /// The retention job.
    Retention,
    /// An admin.
    Admin,
}

impl BinOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            BinOrigin::Pop3 => "pop3",
            BinOrigin::Retention => "retention",
            BinOrigin::Admin => "admin",
        }
    }

    /// A stored name; an unknown one (a newer version's) reads as `Admin`, never failing a listing.
    pub fn parse(s: &str) -> Self {
        match s {
            "pop3" => BinOrigin::Pop3,
            "retention" => BinOrigin::Retention,
            _ => BinOrigin::Admin,
        }
    }
}

/// One message in a user's bin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinnedMessage {
    /// The bin entry's id (not the message's id in the maildrop, which it no longer has).
    pub id: i64,
    /// The UIDL it had, and gets back on a restore that is not "as new".
    pub uid: String,
    pub size: u64,
    /// Unix milliseconds.
    pub delivered_at: i64,
    /// Unix milliseconds.
    pub deleted_at: i64,
    pub origin: BinOrigin,
    /// For `Pop3`: the session's maildrop lock token (the `token` of its login event).
    pub session: Option<i64>,
    /// For `Pop3`, when the session's login is known: client address, mechanism, TLS.
    pub ip: Option<String>,
    pub mechanism: Option<String>,
    pub tls: bool,
    /// Still counted in the user's and domain's usage (the domain's `bin_counts_quota` when it
    /// was binned).
    pub counts_quota: bool,
}

/// A domain's bin settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinSettings {
    /// Days a binned message is kept; 0: no bin, deletes are final.
    pub days: u32,
    /// Binned messages still count against quota.
    pub counts_quota: bool,
}

impl Default for BinSettings {
    fn default() -> Self {
        Self {
            days: DEFAULT_BIN_DAYS,
            counts_quota: false,
        }
    }
}

impl BinSettings {
    pub fn validate(&self) -> Result<()> {
        if self.days > MAX_BIN_DAYS {
            return Err(StoreError::Invalid(format!(
                "bin days must be at most {MAX_BIN_DAYS}"
            )));
        }
        Ok(())
    }
}

/// Which entries of a user's bin a restore or purge takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinSelection {
    All,
    /// By bin entry id (`BinnedMessage::id`).
    Ids(Vec<i64>),
    /// By the UIDL the messages had.
    Uids(Vec<String>),
    /// Deleted between the two Unix millisecond times, both included.
    DeletedBetween {
        from_ms: i64,
        to_ms: i64,
    },
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub restored: u64,
    /// Of those, how many got a new UIDL (asked "as new", or their old one is live again).
    pub renumbered: u64,
    pub octets: u64,
}

/// The recycle bin's store role.
#[async_trait]
pub trait RecycleBin: Send + Sync {
    /// `NotFound` for no such domain.
    async fn bin_settings(&self, domain: &DomainName) -> Result<BinSettings>;
    async fn set_bin_settings(&self, domain: &DomainName, settings: &BinSettings) -> Result<()>;
    /// A user's bin, most recently deleted first.
    async fn bin_page(
        &self,
        address: &Address,
        offset: u64,
        limit: u64,
    ) -> Result<Page<BinnedMessage>>;
    /// Moves the selected entries back into the maildrop, with their UIDL unless `as_new` (or
    /// unless a live message holds it meanwhile), putting their usage back. Not refused for
    /// quota: it was the user's mail. Works while the maildrop is locked: a session that is
    /// open sees the messages at its next login.
    async fn bin_restore(
        &self,
        address: &Address,
        which: &BinSelection,
        as_new: bool,
    ) -> Result<RestoreReport>;
    /// Deletes the selected entries for good; how many went.
    async fn bin_purge(&self, address: &Address, which: &BinSelection) -> Result<u64>;
    /// Deletes for good every entry deleted more than its domain's `bin_days` before `now_ms`
    /// (all of a domain's entries once its bin is turned off); how many went.
    async fn purge_expired_bins(&self, now_ms: i64) -> Result<u64>;
}

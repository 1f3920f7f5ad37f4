//! Mailbox policies (issue 6): per-domain quota behaviour and warning threshold, retention and
//! LOGIN-DELAY; the retention job's and the importer's store operations; and the pure rules
//! they share (unique-id validity, when a warning is due, the warning's text), so that both
//! backends apply exactly the same ones.

use async_trait::async_trait;

use crate::{DomainName, Quota, Result, Usage, UserId};

/// The longest retention and LOGIN-DELAY accepted: about 100 years, far beyond any policy, and
/// small enough that day and second arithmetic never overflows in either database.
pub const MAX_RETENTION_DAYS: u32 = 36_500;
pub const MAX_LOGIN_DELAY_SECS: u32 = 86_400 * 365;

/// A domain's mailbox policies; `None` is "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainPolicies {
    /// A delivery over quota gets `452 4.2.2` (try later) instead of `552 5.2.2`.
    pub quota_tempfail: bool,
    /// Usage, in percent of a user's quota, at which the one-time warning notice is delivered.
    pub quota_warn_percent: Option<u8>,
    /// Messages older than this many days are deleted; CAPA advertises `EXPIRE n`.
    pub retention_days: Option<u32>,
    /// Logins sooner than this after the last successful one get `-ERR [LOGIN-DELAY]`.
    pub login_delay_secs: Option<u32>,
}

impl Default for DomainPolicies {
    /// What a new domain gets: permanent failures, a warning at 90 %, no retention, no delay.
    fn default() -> Self {
        Self {
            quota_tempfail: false,
            quota_warn_percent: Some(90),
            retention_days: None,
            login_delay_secs: None,
        }
    }
}

impl DomainPolicies {
    /// Checks the ranges; the store and every frontend call this before storing.
    pub fn validate(&self) -> Result<()> {
        if self.quota_warn_percent.is_some_and(|p| p == 0 || p > 100) {
            return Err(crate::StoreError::Invalid(
                "quota warning threshold must be 1-100 percent".into(),
            ));
        }
        if self
            .retention_days
            .is_some_and(|d| d == 0 || d > MAX_RETENTION_DAYS)
        {
            return Err(crate::StoreError::Invalid(format!(
                "retention must be 1-{MAX_RETENTION_DAYS} days"
            )));
        }
        if self
            .login_delay_secs
            .is_some_and(|s| s == 0 || s > MAX_LOGIN_DELAY_SECS)
        {
            return Err(crate::StoreError::Invalid(format!(
                "login delay must be 1-{MAX_LOGIN_DELAY_SECS} seconds"
            )));
        }
        Ok(())
    }
}

/// What a logged-in session advertises in CAPA: its domain's retention and login delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserPolicy {
    pub retention_days: Option<u32>,
    pub login_delay_secs: Option<u32>,
}

/// What CAPA advertises before login, where the user is not known yet (RFC 2449 §6.5, §6.7):
/// the smallest value any domain has, and whether domains differ (the `USER` tag).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicySummary {
    /// Shortest retention of any domain; `None` when no domain has one.
    pub min_retention_days: Option<u32>,
    /// Whether some domain has another retention (or none).
    pub retention_varies: bool,
    /// Shortest login delay of any domain; `None` when no domain has one.
    pub min_login_delay_secs: Option<u32>,
    pub login_delay_varies: bool,
}

/// What one run of the retention job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Messages deleted.
    pub deleted: u64,
    /// Transactions used (each deletes at most the batch size).
    pub batches: u64,
}

/// One message for `import`: `key` names its source, so importing it again is recognised;
/// `uid` is the unique-id it had on the old server, when known; `data` is the whole message,
/// CRLF-normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportMessage {
    pub key: String,
    pub uid: Option<String>,
    pub data: Vec<u8>,
}

/// What `import` did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Stored; `uid` is the one it had (or a new one when it had none).
    Added { uid: String },
    /// Imported before (same key): nothing added.
    Present,
    /// Stored under a new unique-id because its own breaks RFC 1939: clients will fetch it
    /// again. `reason` says why, for the import report.
    Renumbered {
        old: String,
        uid: String,
        reason: String,
    },
}

/// Mailbox policies, retention and import.
#[async_trait]
pub trait Policies: Send + Sync {
    async fn domain_policies(&self, domain: &DomainName) -> Result<DomainPolicies>;
    /// Validates and stores all of a domain's policies at once.
    async fn set_domain_policies(&self, domain: &DomainName, p: &DomainPolicies) -> Result<()>;
    /// The policies a logged-in user's CAPA shows.
    async fn user_policy(&self, user: UserId) -> Result<UserPolicy>;
    /// What CAPA shows before login.
    async fn policy_summary(&self) -> Result<PolicySummary>;
    /// One run of the retention job: deletes messages delivered before `now_ms` minus their
    /// domain's retention, at most `batch` per transaction, skipping maildrops locked by a live
    /// session. Safe to run from several frontends at once.
    async fn expire(&self, now_ms: i64, batch: u32) -> Result<ExpireReport>;
    /// Stores messages for `user` in one transaction, keeping their unique-ids where valid.
    /// Quotas are counted but not enforced: an admin moving a customer decides that.
    async fn import(&self, user: UserId, messages: &[ImportMessage]) -> Result<Vec<ImportOutcome>>;
}

/// Why `uid` cannot be a POP3 unique-id (RFC 1939 §7: 1 to 70 characters 0x21-0x7E), or `None`.
pub fn uid_problem(uid: &str) -> Option<String> {
    if uid.is_empty() || uid.len() > 70 {
        return Some(format!("is {} characters long (1-70 allowed)", uid.len()));
    }
    uid.bytes()
        .find(|b| !(0x21..=0x7e).contains(b))
        .map(|b| format!("contains the byte 0x{b:02X} (only 0x21-0x7E allowed)"))
}

/// Whether `usage` has reached `percent` of `quota` in bytes or messages.
pub fn warning_due(quota: Quota, usage: Usage, percent: Option<u8>) -> bool {
    let Some(p) = percent.map(u128::from) else {
        return false;
    };
    let reached = |limit: Option<u64>, used: u64| {
        limit.is_some_and(|l| u128::from(used) * 100 >= u128::from(l) * p)
    };
    reached(quota.bytes, usage.bytes) || reached(quota.messages, usage.messages)
}

/// The warning notice delivered into a mailbox that crossed its threshold. `now` is Unix seconds.
pub fn quota_notice(address: &str, domain: &str, quota: Quota, usage: Usage, now: i64) -> Vec<u8> {
    let date = time::OffsetDateTime::from_unix_timestamp(now)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    let line = |what: &str, used: u64, limit: Option<u64>| {
        limit.map_or(String::new(), |l| {
            format!(
                "  {what}: {used} of {l} ({}%)\r\n",
                u128::from(used) * 100 / u128::from(l.max(1))
            )
        })
    };
    format!(
        "From: Mail system <postmaster@{domain}>\r\nTo: <{address}>\r\nSubject: Your mailbox is almost full\r\n\
         Date: {date}\r\nMessage-ID: <quota-warning.{now}.{address}>\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         Your mailbox {address} is almost full:\r\n\r\n{}{}\r\n\
         When it is full, new mail is refused. Download and delete messages to make room.\r\n",
        line("Size (octets)", usage.bytes, quota.bytes),
        line("Messages", usage.messages, quota.messages),
    )
    .into_bytes()
}

/// `Some(n)` when `uid` is `<prefix>.<n>`: an id this install could assign itself, so the
/// counter must move past it before it is stored as an imported one.
pub(crate) fn own_uid_number(uid: &str, prefix: &str) -> Option<i64> {
    uid.strip_prefix(prefix)?
        .strip_prefix('.')?
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_rules() {
        assert_eq!(uid_problem("00000001a1b2c3d4"), None);
        assert_eq!(uid_problem(&"x".repeat(70)), None);
        assert!(uid_problem(&"x".repeat(71)).is_some());
        assert!(uid_problem("").is_some());
        assert!(uid_problem("a b").is_some());
        assert!(uid_problem("é").is_some());
    }

    #[test]
    fn warnings() {
        let q = Quota {
            bytes: Some(1000),
            messages: Some(10),
        };
        let u = |bytes, messages| Usage { bytes, messages };
        assert!(!warning_due(q, u(899, 8), Some(90)));
        assert!(warning_due(q, u(900, 1), Some(90)));
        assert!(warning_due(q, u(0, 9), Some(90)));
        assert!(!warning_due(q, u(1000, 10), None));
        assert!(!warning_due(
            Quota::default(),
            u(u64::MAX, u64::MAX),
            Some(1)
        ));
    }

    #[test]
    fn own_uids() {
        assert_eq!(own_uid_number("ab12cd34.17", "ab12cd34"), Some(17));
        assert_eq!(own_uid_number("ab12cd34.x", "ab12cd34"), None);
        assert_eq!(own_uid_number("ab12cd3417", "ab12cd34"), None);
        assert_eq!(own_uid_number("00000001ab12cd34", "ab12cd34"), None);
    }
}

//! Re-download alarms (issue 21, item 3): the two patterns behind most "my mail is gone" calls,
//! noticed as they happen so the help desk sees them on the user page and the dashboard.
//!
//! - `Redownload`: a session retrieves (RETR) most of a mailbox that earlier sessions had
//!   already retrieved: a new client, or one that lost its UIDLs, downloading everything again;
//!   often the old client then deletes what the new one left.
//! - `QuickDelete`: two client addresses each delete mail within seconds of its delivery, within
//!   the hour: two clients set to "delete from server", each taking mail the other never sees.
//!
//! Both are detected by the store when a session ends (`Maildrops::end_session`), in its
//! transaction, from `SessionEnd`'s retrieved and deleted messages and login; each recorded alarm
//! is counted in `pophost_redownload_alarms_total{domain,kind}`.

use async_trait::async_trait;

use crate::{Address, Result, Scope};

/// Rule 1: only a maildrop of at least this many messages...
pub const REDOWNLOAD_MIN_MESSAGES: u64 = 50;
/// ...of which a session retrieves again at least this percentage (messages an earlier session
/// had already retrieved in full), raises a `Redownload` alarm.
pub const REDOWNLOAD_PERCENT: u64 = 80;
/// Rule 2: a session deletes quickly when every message it deletes was delivered less than this
/// many seconds before its QUIT...
pub const QUICK_DELETE_SECS: i64 = 60;
/// ...and two sessions from different client addresses doing so within this many seconds raise
/// a `QuickDelete` alarm.
pub const QUICK_DELETE_WINDOW_SECS: i64 = 3600;
/// At most one alarm of a kind per user in this many seconds: a client that re-downloads
/// everything at every poll is one problem, not one per poll.
pub const ALARM_QUIET_SECS: i64 = 3600;
/// How many alarms the user page and the dashboard show.
pub const RECENT_ALARMS: u64 = 20;
/// The name of the counter each recorded alarm adds to (labels `domain` and `kind`).
pub const ALARM_COUNTER: &str = "pophost_redownload_alarms_total";

/// Which pattern an alarm is. Stored by its `as_str` name; a name this version does not know is
/// kept as `Other`, so an older frontend still shows a newer one's alarms.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlarmKind {
    Redownload,
    QuickDelete,
    Other(String),
}

impl AlarmKind {
    pub fn as_str(&self) -> &str {
        match self {
            AlarmKind::Redownload => "redownload",
            AlarmKind::QuickDelete => "quick_delete",
            AlarmKind::Other(other) => other,
        }
    }

    pub fn parse(name: &str) -> Self {
        match name {
            "redownload" => AlarmKind::Redownload,
            "quick_delete" => AlarmKind::QuickDelete,
            other => AlarmKind::Other(other.to_string()),
        }
    }
}

/// One alarm, as the user page, the dashboard and the API show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub address: Address,
    pub kind: AlarmKind,
    /// Unix milliseconds of the session's end.
    pub at: i64,
    /// Messages retrieved again (`Redownload`) or deleted (`QuickDelete`) by the session.
    pub count: u64,
    /// The session's client address and login mechanism, when known.
    pub ip: Option<String>,
    pub mechanism: Option<String>,
    /// `QuickDelete`: the other address that deleted mail on arrival.
    pub previous_ip: Option<String>,
}

impl Alarm {
    /// What happened, in words, without the address or the time (the caller places those):
    /// "re-downloaded 1,204 messages from a new client (192.0.2.7, USER)".
    pub fn describe(&self) -> String {
        let client = match (&self.ip, &self.mechanism) {
            (Some(ip), Some(m)) => format!(" ({ip}, {m})"),
            (Some(ip), None) => format!(" ({ip})"),
            (None, Some(m)) => format!(" ({m})"),
            (None, None) => String::new(),
        };
        let count = thousands(self.count);
        let plural = if self.count == 1 { "" } else { "s" };
        match &self.kind {
            AlarmKind::Redownload => {
                format!("re-downloaded {count} message{plural} from a new client{client}")
            }
            AlarmKind::QuickDelete => {
                let other = self
                    .previous_ip
                    .as_deref()
                    .map(|ip| format!(" ({ip})"))
                    .unwrap_or_default();
                format!(
                    "deleted {count} message{plural} within {QUICK_DELETE_SECS} s of delivery \
                     from a second client{client}; another client{other} did the same within \
                     the hour: two clients are deleting each other's mail"
                )
            }
            AlarmKind::Other(kind) => format!("{kind}: {count} message{plural}{client}"),
        }
    }
}

/// 1204 as "1,204".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Reading the alarms (they are written by `Maildrops::end_session`).
#[async_trait]
pub trait Alarms: Send + Sync {
    /// The newest `limit` alarms from `since_ms` on in scope, newest first (the dashboard).
    async fn recent_alarms(&self, scope: &Scope, since_ms: i64, limit: u64) -> Result<Vec<Alarm>>;
    /// A user's newest `limit` alarms, newest first; empty for no such user.
    async fn user_alarms(&self, address: &Address, limit: u64) -> Result<Vec<Alarm>>;
    /// Forgets alarms from before `before_ms`; how many went.
    async fn prune_alarms(&self, before_ms: i64) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_its_name() {
        for kind in [
            AlarmKind::Redownload,
            AlarmKind::QuickDelete,
            AlarmKind::Other("x".into()),
        ] {
            assert_eq!(AlarmKind::parse(kind.as_str()), kind);
        }
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn a_redownload_reads_as_the_help_desk_says_it() {
        let alarm = Alarm {
            address: Address::parse("john@example.com").expect("address"),
            kind: AlarmKind::Redownload,
            at: 0,
            count: 1204,
            ip: Some("192.0.2.7".into()),
            mechanism: Some("USER".into()),
            previous_ip: None,
        };
        assert_eq!(
            alarm.describe(),
            "re-downloaded 1,204 messages from a new client (192.0.2.7, USER)"
        );
    }
}

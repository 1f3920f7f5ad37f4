//! The Activity section of a user's page: what the customer did, in words a help desk reads
//! out on the phone (times in UTC, sizes in KiB/MiB, a failed login's reason spelled out).

use mailstore::{ACTIVITY_DAYS, LoginEvent, Transfer, UserActivity};

use crate::pages::{human_bytes, human_time};

/// One login as the page shows it.
pub struct LoginView {
    pub when: String,
    /// The client's address, or "unknown".
    pub client: String,
    pub mechanism: String,
    pub tls: bool,
    pub success: bool,
    /// Why a failure failed, in words; empty for a success.
    pub why: String,
}

impl From<&LoginEvent> for LoginView {
    fn from(e: &LoginEvent) -> Self {
        Self {
            when: human_time(e.at),
            client: e.ip.clone().unwrap_or_else(|| "unknown".into()),
            mechanism: e.mechanism.clone(),
            tls: e.tls,
            success: e.failure.is_none(),
            why: e
                .failure
                .as_ref()
                .map(|r| r.describe().to_string())
                .unwrap_or_default(),
        }
    }
}

/// The Activity section.
pub struct ActivityView {
    pub last_login: Option<LoginView>,
    /// "never" when no delivery is recorded.
    pub last_delivery: String,
    pub days: i64,
    /// "3 messages (1.5 KiB)".
    pub retrieved: String,
    pub deleted: String,
    pub logins: Vec<LoginView>,
}

impl From<&UserActivity> for ActivityView {
    fn from(a: &UserActivity) -> Self {
        Self {
            last_login: a.last_login.as_ref().map(LoginView::from),
            last_delivery: a.last_delivery.map_or_else(|| "never".into(), human_time),
            days: ACTIVITY_DAYS,
            retrieved: transfer(a.retrieved),
            deleted: transfer(a.deleted),
            logins: a.logins.iter().map(LoginView::from).collect(),
        }
    }
}

fn transfer(t: Transfer) -> String {
    let noun = if t.messages == 1 {
        "message"
    } else {
        "messages"
    };
    format!("{} {noun} ({})", t.messages, human_bytes(t.octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_words() {
        assert_eq!(transfer(Transfer::default()), "0 messages (0 B)");
        assert_eq!(
            transfer(Transfer {
                messages: 1,
                octets: 1536
            }),
            "1 message (1.5 KiB)"
        );
    }
}

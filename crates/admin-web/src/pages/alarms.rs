//! Re-download alarms as the user page and the dashboard show them: one sentence each, the way
//! the help desk would say it, with a link to the user.

use mailstore::Alarm;

use crate::pages::domains::segment;
use crate::pages::human_time;

pub struct AlarmView {
    /// `redownload` or `quick_delete` (a CSS class and a test hook).
    pub kind: String,
    /// "john@example.com re-downloaded 1,204 messages from a new client (192.0.2.7, USER) at
    /// 2026-12-07 10:02:00 UTC".
    pub text: String,
    /// The user's page.
    pub href: String,
}

impl From<&Alarm> for AlarmView {
    fn from(a: &Alarm) -> Self {
        Self {
            kind: a.kind.as_str().to_string(),
            text: format!("{} {} at {}", a.address, a.describe(), human_time(a.at)),
            href: format!(
                "/domains/{}/users/{}",
                segment(a.address.domain.as_str()),
                segment(a.address.local.as_str())
            ),
        }
    }
}

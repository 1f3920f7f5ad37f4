//! CAPA's `EXPIRE` and `LOGIN-DELAY` lines (RFC 2449 §6.5, §6.7). Before login the user is
//! unknown: the shortest value of any domain, tagged `USER` when domains differ. After login,
//! the user's domain's own value, which is what the retention job and the login check apply.

use super::{Session, State};

impl Session {
    pub(super) async fn policy_capability(&self) -> Vec<String> {
        if let State::Transaction(t) = &self.state {
            let policy = t.policy;
            let mut lines = vec![match policy.retention_days {
                Some(days) => format!("EXPIRE {days}"),
                None => "EXPIRE NEVER".into(),
            }];
            lines.extend(policy.login_delay_secs.map(|s| format!("LOGIN-DELAY {s}")));
            return lines;
        }
        let summary = match self.services.policies.policy_summary().await {
            Ok(summary) => summary,
            Err(e) => {
                // CAPA still answers; it just promises nothing it cannot back up.
                tracing::warn!(error = %e, "reading mailbox policies for CAPA failed");
                return Vec::new();
            }
        };
        let user = |varies: bool| if varies { " USER" } else { "" };
        let mut lines = vec![match summary.min_retention_days {
            Some(days) => format!("EXPIRE {days}{}", user(summary.retention_varies)),
            None => "EXPIRE NEVER".into(),
        }];
        lines.extend(
            summary
                .min_login_delay_secs
                .map(|s| format!("LOGIN-DELAY {s}{}", user(summary.login_delay_varies))),
        );
        lines
    }
}

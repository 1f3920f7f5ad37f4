//! The maildrop leases this process holds for live sessions: the only ones it renews. A lease a
//! session gave up stops being renewed even when its release failed (say, the database was
//! restarting), so it expires after the TTL instead of locking the mailbox until a restart.

use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub(crate) struct Held(Mutex<HashSet<i64>>);

impl Held {
    pub(crate) fn add(&self, token: i64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token);
    }

    pub(crate) fn remove(&self, token: i64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
    }

    pub(crate) fn tokens(&self) -> Vec<i64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Of the `asked` tokens, forgets and returns those not `renewed`: their rows are gone.
    pub(crate) fn drop_missing(&self, asked: &[i64], renewed: &[i64]) -> Vec<i64> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let lost: Vec<i64> = asked
            .iter()
            .copied()
            .filter(|t| !renewed.contains(t))
            .collect();
        for t in &lost {
            held.remove(t);
        }
        lost
    }
}

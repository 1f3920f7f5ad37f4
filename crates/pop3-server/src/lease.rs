//! The maildrop leases this server's sessions hold. When lease renewal finds one gone from the
//! store (an admin broke the lock, or it expired and another frontend took it), the session
//! holding it is ended at once instead of at its next QUIT: `Kicks` maps each lease to its
//! session's cancellation token, and a `HeldLease` keeps its entry for as long as the session's
//! TRANSACTION (or failed UPDATE) lives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mailstore::Lease;
use tokio_util::sync::CancellationToken;

use crate::observe::names;

/// The store's token of one maildrop lease (`Lease::token`, `Maildrops::renew_leases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(pub i64);

/// The live leases of this server, by token.
#[derive(Clone, Default)]
pub struct Kicks(Arc<Mutex<HashMap<LeaseToken, CancellationToken>>>);

impl Kicks {
    /// Registers `lease`: losing it cancels `kicked`. The entry lives as long as the returned
    /// guard.
    pub(crate) fn hold(&self, lease: Lease, kicked: CancellationToken) -> HeldLease {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(LeaseToken(lease.token), kicked);
        metrics::gauge!(names::MAILDROPS_HELD).set(map.len() as f64);
        HeldLease {
            kicks: self.clone(),
            lease,
        }
    }

    /// Ends the sessions holding `lost` leases.
    pub fn kick(&self, lost: impl IntoIterator<Item = LeaseToken>) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for token in lost {
            if let Some(kicked) = map.get(&token) {
                kicked.cancel();
            }
        }
    }
}

/// A maildrop lease a session holds, registered in `Kicks`: the entry goes when this does,
/// whichever way the session leaves the state that owns it.
pub(crate) struct HeldLease {
    kicks: Kicks,
    lease: Lease,
}

impl HeldLease {
    /// The store's lease, for the calls made under it (UPDATE, unlock).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        let mut map = self.kicks.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&LeaseToken(self.lease.token));
        metrics::gauge!(names::MAILDROPS_HELD).set(map.len() as f64);
    }
}

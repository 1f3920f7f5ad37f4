//! Conversions shared by the SQL backends: SQL integers are signed, sizes and limits are not.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Quota, QuotaChange};

/// A fresh name for this run of a node, telling its leases from a crashed predecessor's.
pub(crate) fn incarnation() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) fn quota(bytes: Option<i64>, messages: Option<i64>) -> Quota {
    Quota {
        bytes: bytes.map(to_u64),
        messages: messages.map(to_u64),
    }
}

/// A quota change as SQL parameters: (whether to change it, the new limit or NULL) per field.
pub(crate) fn quota_binds(change: QuotaChange) -> ((bool, Option<i64>), (bool, Option<i64>)) {
    let field = |f: Option<Option<u64>>| (f.is_some(), f.flatten().map(to_i64));
    (field(change.bytes), field(change.messages))
}

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

/// Users of domain `$1` whose quota is larger than the domain's (same SQL on both backends).
pub(crate) const QUOTA_NESTING: &str =
    "SELECT count(*) FROM users u JOIN domains d ON d.id = u.domain_id
     WHERE d.id = $1
       AND ((d.quota_bytes IS NOT NULL AND u.quota_bytes > d.quota_bytes)
         OR (d.quota_messages IS NOT NULL AND u.quota_messages > d.quota_messages))";

pub(crate) fn quota_nesting_result(users_outside: i64) -> crate::Result<()> {
    if users_outside > 0 {
        return Err(crate::StoreError::Invalid(format!(
            "a user's quota must lie inside the domain's: {users_outside} user(s) would have a \
             larger quota than their domain"
        )));
    }
    Ok(())
}

/// Whether user `$1` (or their domain) is full for a message of `$2` octets, and whether the
/// domain wants temporary failures (same SQL on both backends).
pub(crate) const QUOTA_AT_RCPT: &str = "SELECT
        (u.quota_bytes IS NOT NULL AND u.used_bytes + $2 > u.quota_bytes)
     OR (u.quota_messages IS NOT NULL AND u.used_messages + 1 > u.quota_messages)
     OR (d.quota_bytes IS NOT NULL AND d.used_bytes + $2 > d.quota_bytes)
     OR (d.quota_messages IS NOT NULL AND d.used_messages + 1 > d.quota_messages),
        d.quota_tempfail
     FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.id = $1";

/// Shortest retention and login delay of any domain, and how many different values (NULL
/// counting as one) each has: more than one means CAPA must say `USER`.
pub(crate) const POLICY_SUMMARY: &str = "SELECT min(retention_days),
        count(DISTINCT coalesce(retention_days, -1)),
        min(login_delay_secs), count(DISTINCT coalesce(login_delay_secs, -1))
     FROM domains";

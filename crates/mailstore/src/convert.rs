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

/// At RCPT, in one statement: the user that address `$2`@`$1` names (through domain aliases;
/// not `find_user`: a disabled account cannot log in but still receives mail), whether they
/// (or their domain) are full for a message of `$3` octets, and whether the domain wants
/// temporary failures (same SQL on both backends).
pub(crate) const RECIPIENT_AT_RCPT: &str = "SELECT u.id,
        (u.quota_bytes IS NOT NULL AND u.used_bytes + $3 > u.quota_bytes)
     OR (u.quota_messages IS NOT NULL AND u.used_messages + 1 > u.quota_messages)
     OR (d.quota_bytes IS NOT NULL AND d.used_bytes + $3 > d.quota_bytes)
     OR (d.quota_messages IS NOT NULL AND d.used_messages + 1 > d.quota_messages),
        d.quota_tempfail
     FROM users u JOIN domains d ON d.id = u.domain_id
     WHERE u.localpart = $2 AND u.domain_id = (
         SELECT id FROM domains WHERE name = $1
         UNION ALL
         SELECT domain_id FROM domain_aliases WHERE alias = $1
         LIMIT 1)";

/// `RECIPIENT_AT_RCPT`'s answer: the user, or why not.
pub(crate) fn recipient_at_rcpt(
    row: Option<(i64, bool, bool)>,
) -> crate::Result<Option<crate::UserId>> {
    match row {
        None => Ok(None),
        Some((id, false, _)) => Ok(Some(crate::UserId(id))),
        Some((_, true, false)) => Err(crate::StoreError::QuotaExceeded),
        Some((_, true, true)) => Err(crate::StoreError::QuotaExceededTemporary),
    }
}

/// Shortest retention and login delay of any domain, and how many different values (NULL
/// counting as one) each has: more than one means CAPA must say `USER`.
pub(crate) const POLICY_SUMMARY: &str = "SELECT CAST(min(retention_days) AS BIGINT),
        count(DISTINCT coalesce(retention_days, -1)),
        CAST(min(login_delay_secs) AS BIGINT), count(DISTINCT coalesce(login_delay_secs, -1))
     FROM domains";

/// Parses the one-row listing `Maildrops::list` reads on SQLite: one message per line,
/// `id size blob_id uid`, lines separated by LF, in id order. The uid comes last and may hold
/// anything but an LF (uids are 0x21-0x7E, see `uid_problem`).
pub(crate) fn parse_listing(listing: &str) -> crate::Result<Vec<crate::MessageMeta>> {
    if listing.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |line: &str| crate::StoreError::Invalid(format!("malformed listing line {line:?}"));
    let mut messages = Vec::with_capacity(listing.bytes().filter(|&b| b == b'\n').count() + 1);
    for line in listing.split('\n') {
        let mut fields = line.splitn(4, ' ');
        let mut int = || -> Option<i64> { fields.next()?.parse().ok() };
        let (Some(id), Some(size), Some(blob)) = (int(), int(), int()) else {
            return Err(bad(line));
        };
        let uid = fields
            .next()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| bad(line))?;
        messages.push(crate::MessageMeta {
            id: crate::MessageId(id),
            uid: uid.to_owned(),
            size: to_u64(size),
            blob: crate::BlobId(blob),
        });
    }
    // The order the store gave is id order already (then this is one pass); sorting keeps it
    // so even where SQL leaves the order of an aggregate open.
    messages.sort_by_key(|m| m.id.0);
    Ok(messages)
}

/// Joins the Postgres listing's columns (`Maildrops::list`): ids, sizes, bodies, and the uids
/// one per line, all in the same order; the result is in id order.
pub(crate) fn zip_listing(
    ids: &[i64],
    sizes: &[i64],
    blobs: &[i64],
    uids: &str,
) -> crate::Result<Vec<crate::MessageMeta>> {
    let uids: Vec<&str> = if ids.is_empty() {
        Vec::new()
    } else {
        uids.split('\n').collect()
    };
    if sizes.len() != ids.len() || blobs.len() != ids.len() || uids.len() != ids.len() {
        return Err(crate::StoreError::Invalid(format!(
            "listing columns disagree: {} ids, {} sizes, {} bodies, {} uids",
            ids.len(),
            sizes.len(),
            blobs.len(),
            uids.len()
        )));
    }
    // Id order: the rows come in the order Postgres scanned them, which is id order when it
    // reads the index but may not be when it reads the heap. Sorting positions by id (rather
    // than the finished entries) keeps an unsorted listing cheap.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    if !ids.is_sorted() {
        order.sort_unstable_by_key(|&i| ids[i]);
    }
    let messages = order
        .into_iter()
        .map(|i| crate::MessageMeta {
            id: crate::MessageId(ids[i]),
            uid: uids[i].to_owned(),
            size: to_u64(sizes[i]),
            blob: crate::BlobId(blobs[i]),
        })
        .collect();
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lines_parse_in_order() {
        assert!(parse_listing("").unwrap().is_empty());
        let got = parse_listing("3 120 7 pfx.1\n9 5 7 a b\n10 0 11 x").unwrap();
        let fields: Vec<_> = got
            .iter()
            .map(|m| (m.id.0, m.size, m.blob.0, m.uid.as_str()))
            .collect();
        assert_eq!(
            fields,
            [(3, 120, 7, "pfx.1"), (9, 5, 7, "a b"), (10, 0, 11, "x")]
        );
        for bad in ["3 120 7", "3 120 7 ", "x 1 2 u", "1 2 u", "1 2 3 u\n"] {
            assert!(parse_listing(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn listing_columns_zip_in_order() {
        assert!(zip_listing(&[], &[], &[], "").unwrap().is_empty());
        let got = zip_listing(&[9, 3], &[5, 120], &[7, 7], "a b\npfx.1").unwrap();
        let fields: Vec<_> = got
            .iter()
            .map(|m| (m.id.0, m.size, m.blob.0, m.uid.as_str()))
            .collect();
        assert_eq!(fields, [(3, 120, 7, "pfx.1"), (9, 5, 7, "a b")]);
        assert!(zip_listing(&[1, 2], &[1, 2], &[1, 2], "only-one").is_err());
        assert!(zip_listing(&[1], &[1, 2], &[1], "u").is_err());
    }
}

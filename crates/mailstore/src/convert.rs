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

//! The recycle bin (issue 21, item 1) for the pages, the API and `pophost user bin`: a user's
//! bin read in the actor's scope, restores and purges made and audited (`user.bin.restore`,
//! `user.bin.purge`, with counts). A domain's bin settings are part of its settings
//! (`DomainChange::bin_days`, `bin_counts_quota`).

use mailstore::{Address, BinOrigin, BinSelection, BinnedMessage, Page, RestoreReport, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{Actor, Audit, Error, Roles};

/// The most entries one listing returns.
pub const MAX_BIN_PAGE: u64 = 1000;

/// A page of a user's bin, newest first; `NotFound` for no such user or one out of scope.
pub async fn bin_page(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    offset: u64,
    limit: u64,
) -> Result<Page<BinnedMessage>, Error> {
    actor.reach(&address.domain)?;
    not_found(
        roles
            .bin
            .bin_page(address, offset, limit.min(MAX_BIN_PAGE))
            .await,
        address,
    )
}

/// Restores the selected entries (see `RecycleBin::bin_restore`) and audits it.
pub async fn restore(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    which: &BinSelection,
    as_new: bool,
) -> Result<RestoreReport, Error> {
    actor.reach(&address.domain)?;
    let report = not_found(roles.bin.bin_restore(address, which, as_new).await, address)?;
    let object = address.to_string();
    let audit = Audit::new("user.bin.restore", &object, Some(&address.domain)).after(json!({
        "selection": selection_json(which),
        "as_new": as_new,
        "restored": report.restored,
        "renumbered": report.renumbered,
        "bytes": report.octets,
    }));
    actor.audit(roles, audit).await;
    Ok(report)
}

/// Deletes the selected entries for good and audits it; how many went.
pub async fn purge(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    which: &BinSelection,
) -> Result<u64, Error> {
    actor.reach(&address.domain)?;
    let purged = not_found(roles.bin.bin_purge(address, which).await, address)?;
    let object = address.to_string();
    let audit = Audit::new("user.bin.purge", &object, Some(&address.domain)).after(json!({
        "selection": selection_json(which),
        "purged": purged,
    }));
    actor.audit(roles, audit).await;
    Ok(purged)
}

fn not_found<T>(r: mailstore::Result<T>, address: &Address) -> Result<T, Error> {
    match r {
        Err(StoreError::NotFound(_)) => Err(Error::NotFound(format!("user {address}"))),
        other => Ok(other?),
    }
}

fn selection_json(which: &BinSelection) -> serde_json::Value {
    match which {
        BinSelection::All => json!("all"),
        BinSelection::Ids(ids) => json!({ "ids": ids }),
        BinSelection::Uids(uids) => json!({ "uidls": uids }),
        BinSelection::DeletedBetween { from_ms, to_ms } => {
            json!({ "deleted_from": from_ms, "deleted_to": to_ms })
        }
    }
}

/// Who deleted a binned message, in words: "POP3 session 12 from 192.0.2.1 (PLAIN, TLS)",
/// "retention", "admin".
pub fn deleted_by(m: &BinnedMessage) -> String {
    match m.origin {
        BinOrigin::Pop3 => {
            let mut s = "POP3".to_string();
            if let Some(session) = m.session {
                s.push_str(&format!(" session {session}"));
            }
            if let Some(ip) = &m.ip {
                s.push_str(&format!(" from {ip}"));
            }
            if let Some(mechanism) = &m.mechanism {
                let tls = if m.tls { ", TLS" } else { "" };
                s.push_str(&format!(" ({mechanism}{tls})"));
            }
            s
        }
        BinOrigin::Retention => "retention".into(),
        BinOrigin::Admin => "admin".into(),
    }
}

/// One message in a user's recycle bin.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = BinnedMessage)]
pub struct BinnedJson {
    /// The bin entry's id, for restoring or purging it.
    pub id: i64,
    /// The UIDL it had (and gets back unless restored as new).
    pub uidl: String,
    pub size: u64,
    /// Unix milliseconds.
    pub delivered_at: i64,
    /// Unix milliseconds.
    pub deleted_at: i64,
    /// `pop3`, `retention` or `admin`.
    pub origin: &'static str,
    /// The POP3 session that deleted it (its maildrop lock token); null otherwise.
    #[schema(required = true)]
    pub session: Option<i64>,
    /// The deleting session's client address; null when not known.
    #[schema(required = true)]
    pub client: Option<String>,
    /// The deleting session's login mechanism; null when not known.
    #[schema(required = true)]
    pub mechanism: Option<String>,
    pub tls: bool,
    /// Still counted against quota.
    pub counts_quota: bool,
    /// Who deleted it, in words.
    pub deleted_by: String,
}

impl From<&BinnedMessage> for BinnedJson {
    fn from(m: &BinnedMessage) -> Self {
        Self {
            id: m.id,
            uidl: m.uid.clone(),
            size: m.size,
            delivered_at: m.delivered_at,
            deleted_at: m.deleted_at,
            origin: m.origin.as_str(),
            session: m.session,
            client: m.ip.clone(),
            mechanism: m.mechanism.clone(),
            tls: m.tls,
            counts_quota: m.counts_quota,
            deleted_by: deleted_by(m),
        }
    }
}

/// What to restore or purge: exactly one of `all`, `ids`, `uidls`, or `deleted_from` with
/// `deleted_to`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct BinRequest {
    #[serde(default)]
    pub all: bool,
    /// Bin entry ids.
    #[serde(default)]
    pub ids: Option<Vec<i64>>,
    /// UIDLs the messages had.
    #[serde(default)]
    pub uidls: Option<Vec<String>>,
    /// Deleted from this Unix millisecond time on (inclusive).
    #[serde(default)]
    pub deleted_from: Option<i64>,
    /// Deleted up to this Unix millisecond time (inclusive).
    #[serde(default)]
    pub deleted_to: Option<i64>,
    /// Restore only: give the messages new UIDLs, so POP3 clients fetch them again.
    #[serde(default)]
    pub as_new: bool,
}

impl BinRequest {
    pub fn selection(&self) -> Result<BinSelection, Error> {
        let range = self.deleted_from.is_some() || self.deleted_to.is_some();
        let given = [self.all, self.ids.is_some(), self.uidls.is_some(), range]
            .into_iter()
            .filter(|g| *g)
            .count();
        if given != 1 {
            return Err(Error::Invalid(
                "give exactly one of all, ids, uidls, or deleted_from with deleted_to".into(),
            ));
        }
        Ok(
            match (&self.ids, &self.uidls, self.deleted_from, self.deleted_to) {
                _ if self.all => BinSelection::All,
                (Some(ids), ..) => BinSelection::Ids(ids.clone()),
                (_, Some(uidls), ..) => BinSelection::Uids(uidls.clone()),
                (_, _, Some(from_ms), Some(to_ms)) if from_ms <= to_ms => {
                    BinSelection::DeletedBetween { from_ms, to_ms }
                }
                _ => {
                    return Err(Error::Invalid(
                        "deleted_from and deleted_to go together, from before to".into(),
                    ));
                }
            },
        )
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = BinRestored)]
pub struct RestoredJson {
    pub restored: u64,
    /// Of those, how many got a new UIDL.
    pub renumbered: u64,
    pub bytes: u64,
}

impl From<RestoreReport> for RestoredJson {
    fn from(r: RestoreReport) -> Self {
        Self {
            restored: r.restored,
            renumbered: r.renumbered,
            bytes: r.octets,
        }
    }
}

/// What a purge did.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = BinPurged)]
pub struct PurgedJson {
    pub purged: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_exactly_one_selection() {
        let all = BinRequest {
            all: true,
            ..Default::default()
        };
        assert_eq!(all.selection().ok(), Some(BinSelection::All));
        let two = BinRequest {
            all: true,
            ids: Some(vec![1]),
            ..Default::default()
        };
        assert!(two.selection().is_err());
        assert!(BinRequest::default().selection().is_err());
        let half = BinRequest {
            deleted_from: Some(5),
            ..Default::default()
        };
        assert!(half.selection().is_err());
        let range = BinRequest {
            deleted_from: Some(5),
            deleted_to: Some(9),
            ..Default::default()
        };
        assert_eq!(
            range.selection().ok(),
            Some(BinSelection::DeletedBetween {
                from_ms: 5,
                to_ms: 9
            })
        );
    }
}

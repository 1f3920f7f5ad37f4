//! A delivery batch decided in Rust, for the delivery writer (see `group`): the recipients'
//! quotas and usage are read once, each delivery is checked against the usage the batch has
//! reached so far, and what passes is gathered as columns that each dialect's `flush` writes in a
//! few set-wide statements instead of several statements per delivery.

use std::collections::{BTreeMap, HashMap};

use crate::group::Outcomes;
use crate::sql::Claims;
use crate::{Parcel, Result, StoreError, convert::to_i64};

/// A quota and the usage it is checked against, as the batch has moved it so far.
#[derive(Clone, Copy)]
pub(crate) struct Account {
    pub(crate) quota_bytes: Option<i64>,
    pub(crate) quota_messages: Option<i64>,
    pub(crate) used_bytes: i64,
    pub(crate) used_messages: i64,
}

impl Account {
    fn fits(&self, bytes: i64) -> bool {
        self.quota_bytes
            .is_none_or(|q| self.used_bytes + bytes <= q)
            && self.quota_messages.is_none_or(|q| self.used_messages < q)
    }
}

/// The batch's recipients and their domains, with their quotas and usage.
#[derive(Default)]
pub struct Accounts {
    /// user → (domain, whether a delivery must run the quota warning check, account)
    pub(crate) users: HashMap<i64, (i64, bool, Account)>,
    /// domain → (whether a full quota is a temporary failure, account)
    pub(crate) domains: HashMap<i64, (bool, Account)>,
}

/// Deliveries decided but not yet written, as columns: one entry per parcel that some recipient
/// took, one per message.
#[derive(Default)]
pub struct Pending<'a> {
    /// Per parcel: the blob streamed before the delivery, or `None` for a new one.
    pub(crate) blobs: Vec<Option<i64>>,
    pub(crate) sizes: Vec<i64>,
    pub(crate) refs: Vec<i64>,
    /// The tail's chunk number, and the tail (the body's last chunk, possibly empty).
    pub(crate) seqs: Vec<i32>,
    pub(crate) tails: Vec<&'a [u8]>,
    /// Per message: its parcel (1-based), user, header block and size.
    pub(crate) parcel: Vec<i64>,
    pub(crate) users: Vec<i64>,
    pub(crate) prefixes: Vec<&'a [u8]>,
    pub(crate) message_sizes: Vec<i64>,
    /// Per user and per domain: (bytes, messages) to add.
    pub(crate) user_usage: BTreeMap<i64, (i64, i64)>,
    pub(crate) domain_usage: BTreeMap<i64, (i64, i64)>,
    /// Parcels none of whose recipients took them: their streamed blobs go.
    pub(crate) unused_blobs: Vec<i64>,
}

impl<'a> Pending<'a> {
    /// Decides `parcel` for each recipient against `claims` (see `sql::dedup`) and `accounts`
    /// (moving their usage) and adds what passes. Returns each recipient's outcome, and the
    /// users whose quota warning check must run once this is written (the writer flushes, warns,
    /// and reads the accounts again).
    pub(crate) fn add(
        &mut self,
        parcel: &'a Parcel,
        accounts: &mut Accounts,
        claims: &mut Claims,
    ) -> Result<(Outcomes, Vec<i64>)> {
        let mut outcomes = Vec::with_capacity(parcel.recipients.len());
        let mut warn = Vec::new();
        let mut accepted = 0;
        for r in &parcel.recipients {
            let size = to_i64(parcel.size).saturating_add(to_i64(r.prefix.len() as u64));
            let Some((domain, warn_check, user)) = accounts.users.get_mut(&r.user.0) else {
                outcomes.push(Err(StoreError::NotFound("recipient".into())));
                continue;
            };
            let Some((tempfail, domain_account)) = accounts.domains.get_mut(domain) else {
                // Not reached: the writers read every user with their domain.
                outcomes.push(Err(StoreError::NotFound("recipient's domain".into())));
                continue;
            };
            // A duplicate is answered as delivered even to a full mailbox: it is there already.
            if let Some(key) = &parcel.dedup
                && !claims.take(r.user.0, key)
            {
                outcomes.push(Err(StoreError::Duplicate));
                continue;
            }
            if !user.fits(size) || !domain_account.fits(size) {
                if let Some(key) = &parcel.dedup {
                    claims.give_back(r.user.0, key);
                }
                outcomes.push(Err(if *tempfail {
                    StoreError::QuotaExceededTemporary
                } else {
                    StoreError::QuotaExceeded
                }));
                continue;
            }
            for account in [&mut *user, &mut *domain_account] {
                account.used_bytes += size;
                account.used_messages += 1;
            }
            for (usage, id) in [
                (&mut self.user_usage, r.user.0),
                (&mut self.domain_usage, *domain),
            ] {
                let entry = usage.entry(id).or_default();
                entry.0 += size;
                entry.1 += 1;
            }
            self.parcel.push(to_i64(self.blobs.len() as u64 + 1));
            self.users.push(r.user.0);
            self.prefixes.push(&r.prefix);
            self.message_sizes.push(size);
            if *warn_check {
                warn.push(r.user.0);
            }
            accepted += 1;
            outcomes.push(Ok(()));
        }
        if accepted > 0 {
            self.blobs.push(parcel.blob.map(|b| b.0));
            self.sizes.push(to_i64(parcel.size));
            self.refs.push(accepted);
            self.seqs.push(
                i32::try_from(parcel.chunks)
                    .map_err(|_| StoreError::Invalid("message too large".into()))?,
            );
            self.tails.push(&parcel.tail);
        } else if let Some(blob) = parcel.blob {
            self.unused_blobs.push(blob.0);
        }
        Ok((outcomes, warn))
    }
}

impl Accounts {
    /// From the rows `SqlStore::lock_accounts` reads.
    pub(crate) fn from_rows<R>(rows: &[R]) -> Result<Self>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let mut accounts = Accounts::default();
        for r in rows {
            let account = |at: usize| -> Result<Account> {
                Ok(Account {
                    quota_bytes: r.try_get(at)?,
                    quota_messages: r.try_get(at + 1)?,
                    used_bytes: r.try_get(at + 2)?,
                    used_messages: r.try_get(at + 3)?,
                })
            };
            let domain: i64 = r.try_get(1)?;
            accounts
                .users
                .insert(r.try_get(0)?, (domain, r.try_get(2)?, account(3)?));
            accounts
                .domains
                .insert(domain, (r.try_get(7)?, account(8)?));
        }
        Ok(accounts)
    }
}

//! The recycle bin (see `crate::bin`). `SqlStore::delete_messages` calls `bin_messages` first:
//! when the user's domain keeps a bin, the rows are copied into `binned_messages` in the same
//! transaction as their delete, and their bodies keep their reference. Restores copy them back;
//! purges drop them and their body references.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Transaction, Type};
use tracing::instrument;

use super::directory::found;
use super::{Column, Dialect, RowsAffected, SqlStore, sql};
use crate::convert::*;
use crate::*;

/// How `SqlStore::delete_messages` deletes: for good, or into the bin (if the domain keeps one)
/// recording who deleted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Deleting<'a> {
    /// Removing a user or a domain: nothing is kept.
    Forever,
    /// A POP3 UPDATE, by the session holding lock `token`, with its login when known.
    Pop3 {
        token: i64,
        login: Option<&'a LoginRecord>,
    },
    Retention,
    #[allow(dead_code)] // No admin action deletes single messages yet; the bin is ready for it.
    Admin,
}

/// Entries the expiry purges per transaction.
const PURGE_BATCH: i64 = 1000;

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'a> &'a str: Encode<'a, D> + Decode<'a, D> + Type<D>,
    i64: Column<D>,
    bool: Column<D>,
    String: Column<D>,
    Vec<u8>: Column<D>,
    Option<i64>: Column<D>,
    Option<String>: Column<D>,
    Option<Vec<u8>>: Column<D>,
    usize: ColumnIndex<D::Row>,
{
    /// Copies messages about to be deleted into the bin when their domain keeps one. `None`:
    /// no bin (the delete is final); `Some(counts_quota)`: binned, still counted in usage or not.
    pub(crate) async fn bin_messages(
        tx: &mut Transaction<'_, D>,
        user: i64,
        ids: &[i64],
        how: Deleting<'_>,
    ) -> Result<Option<bool>> {
        let (origin, token, login) = match how {
            Deleting::Forever => return Ok(None),
            Deleting::Pop3 { token, login } => (BinOrigin::Pop3, Some(token), login),
            Deleting::Retention => (BinOrigin::Retention, None, None),
            Deleting::Admin => (BinOrigin::Admin, None, None),
        };
        let settings: Option<(i64, bool)> = sqlx::query_as(
            "SELECT CAST(d.bin_days AS BIGINT), d.bin_counts_quota
             FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.id = $1",
        )
        .bind(user)
        .fetch_optional(&mut **tx)
        .await?;
        let Some((days, counts)) = settings else {
            return Ok(None);
        };
        if days <= 0 {
            return Ok(None);
        }
        sqlx::query(sql::<D>(
            "INSERT INTO binned_messages (user_id, uid, blob_id, prefix, size, delivered_at,
                 deleted_at, origin, session, ip, mechanism, tls, counts_quota)
             SELECT user_id, uid, blob_id, prefix, size, delivered_at,
                    $3, $4, $5, $6, $7, $8, $9
             FROM messages WHERE user_id = $1 AND id IN (SELECT {each}($2))",
        ))
        .bind(user)
        .bind(D::ids(ids))
        .bind(now_ms())
        .bind(origin.as_str())
        .bind(token)
        .bind(login.and_then(|l| l.ip).map(|ip| ip.to_string()))
        .bind(login.map(|l| l.mechanism.clone()))
        .bind(login.is_some_and(|l| l.tls))
        .bind(counts)
        .execute(&mut **tx)
        .await?;
        Ok(Some(counts))
    }

    /// The user's bin entries `which` names, by id.
    async fn selected(
        tx: &mut Transaction<'_, D>,
        user: i64,
        which: &BinSelection,
    ) -> Result<Vec<i64>> {
        let base = "SELECT id FROM binned_messages WHERE user_id = $1";
        let q = match which {
            BinSelection::All => {
                sqlx::query_scalar(sql::<D>(&format!("{base} ORDER BY id"))).bind(user)
            }
            BinSelection::Ids(ids) => sqlx::query_scalar(sql::<D>(&format!(
                "{base} AND id IN (SELECT {{each}}($2)) ORDER BY id"
            )))
            .bind(user)
            .bind(D::ids(ids)),
            BinSelection::Uids(uids) => sqlx::query_scalar(sql::<D>(&format!(
                "{base} AND uid IN (SELECT {{each}}($2)) ORDER BY id"
            )))
            .bind(user)
            .bind(D::names(uids.iter().map(String::as_str))),
            BinSelection::DeletedBetween { from_ms, to_ms } => sqlx::query_scalar(sql::<D>(
                &format!("{base} AND deleted_at >= $2 AND deleted_at <= $3 ORDER BY id"),
            ))
            .bind(user)
            .bind(*from_ms)
            .bind(*to_ms),
        };
        Ok(q.fetch_all(&mut **tx).await?)
    }

    /// Locks the user's domain and user rows (as deliveries do) and returns the user's id.
    async fn lock_user(tx: &mut Transaction<'_, D>, address: &Address) -> Result<i64> {
        let user = Self::user_id(tx, address).await?;
        let domain: i64 = sqlx::query_scalar("SELECT domain_id FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(&mut **tx)
            .await?;
        Self::lock_rows(tx, domain, &[user]).await?;
        Ok(user)
    }

    /// Deletes bin entries for good: their body references go, and what was still counted
    /// leaves the usage counters.
    pub(crate) async fn purge_bin_in(
        tx: &mut Transaction<'_, D>,
        user: i64,
        ids: &[i64],
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let gone: Vec<(i64, i64, bool)> = sqlx::query_as(sql::<D>(
            "DELETE FROM binned_messages WHERE user_id = $1 AND id IN (SELECT {each}($2))
             RETURNING size, blob_id, counts_quota",
        ))
        .bind(user)
        .bind(D::ids(ids))
        .fetch_all(&mut **tx)
        .await?;
        Self::drop_blob_refs(tx, gone.iter().map(|(_, blob, _)| *blob)).await?;
        let counted: Vec<i64> = gone
            .iter()
            .filter(|(_, _, counts)| *counts)
            .map(|(size, _, _)| *size)
            .collect();
        if !counted.is_empty() {
            let bytes: i64 = counted.iter().sum();
            Self::add_usage(tx, user, -bytes, -to_i64(counted.len() as u64)).await?;
        }
        Ok(gone.len() as u64)
    }

    /// Every entry of a user's bin, for removing the user.
    pub(crate) async fn purge_whole_bin(tx: &mut Transaction<'_, D>, user: i64) -> Result<()> {
        let ids = Self::selected(tx, user, &BinSelection::All).await?;
        Self::purge_bin_in(tx, user, &ids).await?;
        Ok(())
    }
}

#[async_trait]
impl<D: Dialect> RecycleBin for SqlStore<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'a> &'a str: Encode<'a, D> + Decode<'a, D> + Type<D>,
    i64: Column<D>,
    bool: Column<D>,
    String: Column<D>,
    Vec<u8>: Column<D>,
    Option<i64>: Column<D>,
    Option<String>: Column<D>,
    Option<Vec<u8>>: Column<D>,
    usize: ColumnIndex<D::Row>,
{
    async fn bin_settings(&self, domain: &DomainName) -> Result<BinSettings> {
        let row: Option<(i64, bool)> = sqlx::query_as(
            "SELECT CAST(bin_days AS BIGINT), bin_counts_quota FROM domains WHERE name = $1",
        )
        .bind(domain.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let (days, counts_quota) =
            row.ok_or_else(|| StoreError::NotFound(format!("domain {domain}")))?;
        Ok(BinSettings {
            days: u32::try_from(days).unwrap_or(0),
            counts_quota,
        })
    }

    #[instrument(skip_all, fields(domain = %domain))]
    async fn set_bin_settings(&self, domain: &DomainName, settings: &BinSettings) -> Result<()> {
        settings.validate()?;
        let updated =
            sqlx::query("UPDATE domains SET bin_days = $1, bin_counts_quota = $2 WHERE name = $3")
                .bind(i64::from(settings.days))
                .bind(settings.counts_quota)
                .bind(domain.as_str())
                .execute(&self.pool)
                .await?;
        found(updated.rows_affected(), || format!("domain {domain}"))
    }

    async fn bin_page(
        &self,
        address: &Address,
        offset: u64,
        limit: u64,
    ) -> Result<Page<BinnedMessage>> {
        let mut tx = self.pool.begin().await?;
        let user = Self::user_id(&mut tx, address).await?;
        let total: i64 =
            sqlx::query_scalar("SELECT count(*) FROM binned_messages WHERE user_id = $1")
                .bind(user)
                .fetch_one(&mut *tx)
                .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, uid, size, {}, deleted_at, origin, session, ip, mechanism, tls,
                    counts_quota
             FROM binned_messages WHERE user_id = $1
             ORDER BY deleted_at DESC, id DESC LIMIT $2 OFFSET $3",
            D::millis("delivered_at")
        )))
        .bind(user)
        .bind(to_i64(limit))
        .bind(to_i64(offset))
        .fetch_all(&mut *tx)
        .await?;
        let items = rows
            .iter()
            .map(|r| -> Result<BinnedMessage> {
                let origin: String = r.try_get(5)?;
                Ok(BinnedMessage {
                    id: r.try_get(0)?,
                    uid: r.try_get(1)?,
                    size: to_u64(r.try_get(2)?),
                    delivered_at: r.try_get(3)?,
                    deleted_at: r.try_get(4)?,
                    origin: BinOrigin::parse(&origin),
                    session: r.try_get(6)?,
                    ip: r.try_get(7)?,
                    mechanism: r.try_get(8)?,
                    tls: r.try_get(9)?,
                    counts_quota: r.try_get(10)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            total: to_u64(total),
        })
    }

    #[instrument(skip_all, fields(user = %address, as_new))]
    async fn bin_restore(
        &self,
        address: &Address,
        which: &BinSelection,
        as_new: bool,
    ) -> Result<RestoreReport> {
        let mut tx = D::begin_write(&self.pool).await?;
        let prefix = Self::prefix(&self.uid_prefix, &mut tx).await?;
        let user = Self::lock_user(&mut tx, address).await?;
        let ids = Self::selected(&mut tx, user, which).await?;
        let mut report = RestoreReport::default();
        let (mut uncounted_bytes, mut uncounted) = (0i64, 0i64);
        for id in ids {
            let (uid, size, counts): (String, i64, bool) =
                sqlx::query_as("SELECT uid, size, counts_quota FROM binned_messages WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            // A live message may hold the UIDL meanwhile (an import, a restore as new of an
            // older copy): two messages of one maildrop never share one.
            let taken: Option<i64> =
                sqlx::query_scalar("SELECT id FROM messages WHERE user_id = $1 AND uid = $2")
                    .bind(user)
                    .bind(&uid)
                    .fetch_optional(&mut *tx)
                    .await?;
            let uid = if as_new || taken.is_some() {
                report.renumbered += 1;
                Self::next_uid(&mut tx, &prefix).await?
            } else {
                uid
            };
            sqlx::query(
                "INSERT INTO messages (user_id, uid, blob_id, prefix, size, delivered_at)
                 SELECT user_id, $2, blob_id, prefix, size, delivered_at
                 FROM binned_messages WHERE id = $1",
            )
            .bind(id)
            .bind(&uid)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM binned_messages WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if !counts {
                uncounted_bytes += size;
                uncounted += 1;
            }
            report.restored += 1;
            report.octets += to_u64(size);
        }
        if uncounted > 0 {
            Self::add_usage(&mut tx, user, uncounted_bytes, uncounted).await?;
        }
        tx.commit().await?;
        Ok(report)
    }

    #[instrument(skip_all, fields(user = %address))]
    async fn bin_purge(&self, address: &Address, which: &BinSelection) -> Result<u64> {
        let mut tx = D::begin_write(&self.pool).await?;
        let user = Self::lock_user(&mut tx, address).await?;
        let ids = Self::selected(&mut tx, user, which).await?;
        let purged = Self::purge_bin_in(&mut tx, user, &ids).await?;
        tx.commit().await?;
        Ok(purged)
    }

    #[instrument(skip_all)]
    async fn purge_expired_bins(&self, now_ms: i64) -> Result<u64> {
        let mut purged = 0;
        loop {
            let mut tx = D::begin_write(&self.pool).await?;
            let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
                "SELECT b.id, b.user_id, u.domain_id FROM binned_messages b
                 JOIN users u ON u.id = b.user_id JOIN domains d ON d.id = u.domain_id
                 WHERE b.deleted_at < $1 - CAST(d.bin_days AS BIGINT) * 86400000
                 ORDER BY u.domain_id, b.user_id, b.id LIMIT $2",
            )
            .bind(now_ms)
            .bind(PURGE_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let mut per_user = std::collections::BTreeMap::<(i64, i64), Vec<i64>>::new();
            for (id, user, domain) in &rows {
                per_user.entry((*domain, *user)).or_default().push(*id);
            }
            for ((domain, user), ids) in &per_user {
                Self::lock_rows(&mut tx, *domain, &[*user]).await?;
                purged += Self::purge_bin_in(&mut tx, *user, ids).await?;
            }
            tx.commit().await?;
            if (rows.len() as i64) < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }
}

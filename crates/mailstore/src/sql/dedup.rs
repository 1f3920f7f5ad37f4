//! Deduplication records (see `crate::dedup`), the same SQL on both backends. `claim` runs in
//! the delivery writer's transaction after the recipients' rows are locked: one upsert for the
//! whole batch records each (user, key) that is new or whose record expired, and returns those;
//! a recipient whose pair it did not return already has that message. The primary key over
//! (user, key) decides between concurrent transactions (another frontend on Postgres): the
//! second waits for the first's commit and then finds its record.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, QueryBuilder, Row, Transaction, Type};
use tracing::instrument;

use super::{Column, Dialect, RowsAffected, SqlStore, sql};
use crate::batch::Accounts;
use crate::convert::to_i64;
use crate::dedup::*;
use crate::*;

/// Rows per upsert statement: far below either backend's limit on bind parameters (3 a row).
/// A batch holds at most 64 parcels, so this is one statement but for huge recipient lists.
const ROWS_PER_CLAIM: usize = 2000;

/// The (user, key) pairs of a batch that this transaction recorded and no message has used yet.
#[derive(Default)]
pub(crate) struct Claims(HashSet<(i64, [u8; 32])>);

impl Claims {
    /// Whether a delivery of `key` to `user` may be stored; it uses the claim up, so the same
    /// message later in the batch is a duplicate of this one.
    pub(crate) fn take(&mut self, user: i64, key: &DedupKey) -> bool {
        self.0.remove(&(user, key.hash))
    }

    /// A delivery that took the claim was refused after all (quota): the claim is free again.
    pub(crate) fn give_back(&mut self, user: i64, key: &DedupKey) {
        self.0.insert((user, key.hash));
    }
}

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
    /// Records the batch's keys for its existing recipients and returns the pairs recorded now.
    /// No statement at all when no parcel carries a key.
    pub(crate) async fn claim(
        tx: &mut Transaction<'_, D>,
        parcels: &[Parcel],
        accounts: &Accounts,
    ) -> Result<Claims> {
        // One row per pair (an upsert must not meet its own row twice), each with the window of
        // the first parcel naming it.
        let mut seen = HashSet::new();
        let mut rows: Vec<(i64, [u8; 32], i64)> = Vec::new();
        for parcel in parcels {
            let Some(key) = &parcel.dedup else { continue };
            let window = to_i64(u64::try_from(key.window.as_millis()).unwrap_or(u64::MAX));
            for r in &parcel.recipients {
                // A user gone since RCPT gets NotFound; a record would break the foreign key.
                if accounts.users.contains_key(&r.user.0) && seen.insert((r.user.0, key.hash)) {
                    rows.push((r.user.0, key.hash, window));
                }
            }
        }
        let mut claims = Claims::default();
        for part in rows.chunks(ROWS_PER_CLAIM) {
            let mut q =
                QueryBuilder::<D>::new("INSERT INTO delivery_keys (user_id, digest, expires_at) ");
            q.push_values(part, |mut row, (user, hash, window)| {
                row.push_bind(*user)
                    .push_bind(hash.to_vec())
                    .push(D::NOW_MS)
                    .push_unseparated(" + ")
                    .push_bind_unseparated(*window);
            });
            q.push(
                sql::<D>(
                    " ON CONFLICT (user_id, digest) DO UPDATE SET expires_at = excluded.expires_at
                  WHERE delivery_keys.expires_at <= {now_ms}
                  RETURNING user_id, digest",
                )
                .0,
            );
            for row in q.build().fetch_all(&mut **tx).await? {
                let user: i64 = row.try_get(0)?;
                let digest: Vec<u8> = row.try_get(1)?;
                if let Ok(hash) = <[u8; 32]>::try_from(digest) {
                    claims.0.insert((user, hash));
                }
            }
        }
        Ok(claims)
    }

    /// Drops the records of claims no message used (the recipient was refused): a refused
    /// delivery must not make the MTA's later retry a "duplicate" that stores nothing.
    pub(crate) async fn release_claims(tx: &mut Transaction<'_, D>, claims: Claims) -> Result<()> {
        for (user, hash) in claims.0 {
            sqlx::query("DELETE FROM delivery_keys WHERE user_id = $1 AND digest = $2")
                .bind(user)
                .bind(hash.to_vec())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl<D: Dialect> Deduplication for SqlStore<D>
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
    #[instrument(skip_all)]
    async fn prune_delivery_keys(&self) -> Result<u64> {
        let mut tx = D::begin_write(&self.pool).await?;
        let gone = sqlx::query(sql::<D>(
            "DELETE FROM delivery_keys WHERE expires_at <= {now_ms}",
        ))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(gone)
    }
}

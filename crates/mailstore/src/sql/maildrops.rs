//! `Maildrops` (what a POP3 session does) and `Delivery` (what LMTP does).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};
use tracing::instrument;

use super::{Column, Dialect, RowsAffected, SqlStore, chunk_number, seq, sql};
use crate::convert::*;
use crate::*;

#[async_trait]
impl<D: Dialect> Maildrops for SqlStore<D>
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
    async fn recover(&self, me: &Claimant) -> Result<()> {
        D::recover(self, me).await
    }

    async fn heartbeat(&self) -> Result<()> {
        D::heartbeat(self).await
    }

    async fn leave(&self) -> Result<()> {
        D::leave(self).await
    }

    #[instrument(skip_all, fields(user = user.0))]
    async fn lock(&self, user: UserId) -> Result<Lease> {
        let lease = D::lock(self, user, None).await?;
        self.held.add(lease.token);
        Ok(lease)
    }

    async fn unlock(&self, lease: &Lease) -> Result<()> {
        self.held.remove(lease.token);
        self.release(lease).await?;
        Ok(())
    }

    async fn renew_leases(&self) -> Result<Vec<i64>> {
        let tokens = self.held.tokens();
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let renewed: Vec<i64> = sqlx::query_scalar(sql::<D>(&format!(
            "UPDATE maildrop_locks SET expires_at = {}
             WHERE incarnation = $2 AND token IN (SELECT {{each}}($3))
             RETURNING token",
            D::after("$1")
        )))
        .bind(self.lease_end_ms())
        .bind(&self.incarnation)
        .bind(D::ids(&tokens))
        .fetch_all(&self.soft)
        .await?;
        Ok(self.held.drop_missing(&tokens, &renewed))
    }

    async fn list(&self, user: UserId) -> Result<Vec<MessageMeta>> {
        D::list(self, user).await
    }

    async fn read_part(&self, message: &MessageMeta, part: u32) -> Result<Option<Vec<u8>>> {
        let data = if part == 0 {
            sqlx::query_scalar("SELECT prefix FROM messages WHERE id = $1")
                .bind(message.id.0)
                .fetch_optional(&self.pool)
                .await?
        } else {
            sqlx::query_scalar("SELECT data FROM blob_chunks WHERE blob_id = $1 AND seq = $2")
                .bind(message.blob.0)
                .bind(seq(part - 1))
                .fetch_optional(&self.pool)
                .await?
        };
        Ok(data)
    }

    async fn read_parts(
        &self,
        message: &MessageMeta,
        first: u32,
        count: u32,
    ) -> Result<Vec<Vec<u8>>> {
        let mut parts = Vec::new();
        let mut next = first;
        if next == 0 && count > 0 {
            // The header block and the first body chunk in one statement: all of a small
            // message, which is what most RETRs read.
            let row: Option<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT m.prefix, c.data FROM messages m
                 LEFT JOIN blob_chunks c ON c.blob_id = m.blob_id AND c.seq = 0 AND $2
                 WHERE m.id = $1",
            )
            .bind(message.id.0)
            .bind(count > 1)
            .fetch_optional(&self.pool)
            .await?;
            let Some((prefix, chunk)) = row else {
                return Ok(parts);
            };
            parts.push(prefix);
            next = 1;
            if count > 1 {
                let Some(chunk) = chunk else {
                    return Ok(parts);
                };
                parts.push(chunk);
                next = 2;
            }
        }
        let want = count.saturating_sub(u32::try_from(parts.len()).unwrap_or(u32::MAX));
        if want == 0 {
            return Ok(parts);
        }
        // Body part `n` is chunk `n - 1`.
        let (from, to) = (next - 1, (next - 1).saturating_add(want));
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT CAST(seq AS BIGINT), data FROM blob_chunks WHERE blob_id = $1 AND seq >= $2 AND seq < $3
             ORDER BY seq",
        )
        .bind(message.blob.0)
        .bind(seq(from))
        .bind(seq(to))
        .fetch_all(&self.pool)
        .await?;
        // A missing chunk ends the message, as `read_part`'s `None` does.
        for ((got, data), expected) in rows.into_iter().zip(from..) {
            if got != seq(expected) {
                break;
            }
            parts.push(data);
        }
        Ok(parts)
    }

    #[instrument(skip_all, fields(user = lease.user.0, deleted = deleted.len()))]
    async fn commit_update(&self, lease: &Lease, deleted: &[MessageId]) -> Result<()> {
        self.held.remove(lease.token);
        if deleted.is_empty() {
            // Nothing to apply: releasing the lease is the whole UPDATE state, one statement.
            return if self.release(lease).await? {
                Ok(())
            } else {
                Err(StoreError::LeaseLost)
            };
        }
        let mut tx = D::begin_write(&self.pool).await?;
        // Deleting our lease row first also row-locks it (Postgres): a concurrent takeover
        // waits for this transaction, and a lease already taken over makes this change nothing.
        let held = sqlx::query("DELETE FROM maildrop_locks WHERE user_id = $1 AND token = $2")
            .bind(lease.user.0)
            .bind(lease.token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if held == 0 {
            return Err(StoreError::LeaseLost);
        }
        Self::delete_messages(
            &mut tx,
            lease.user.0,
            deleted,
            super::Deleting::Pop3 {
                token: lease.token,
                login: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[instrument(skip_all, fields(user = user.0))]
    async fn lock_for_login(&self, user: UserId, login: &LoginRecord) -> Result<Lease> {
        match D::lock(self, user, Some(login)).await {
            Ok(lease) => {
                self.held.add(lease.token);
                Ok(lease)
            }
            Err(e) => {
                let reason = match &e {
                    StoreError::InUse => Some(FailureReason::InUse),
                    StoreError::LoginDelay(_) => Some(FailureReason::LoginDelay),
                    _ => None,
                };
                if let Some(reason) = reason
                    && let Err(failed) = self.record_refused(user, login, reason).await
                {
                    tracing::warn!(error = %failed, "recording a refused login failed");
                }
                Err(e)
            }
        }
    }

    #[instrument(skip_all, fields(user = lease.user.0))]
    async fn end_session(&self, lease: &Lease, end: &SessionEnd<'_>) -> Result<()> {
        self.end_session_in(lease, end).await
    }
}

#[async_trait]
impl<D: Dialect> Delivery for SqlStore<D>
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
    async fn find_recipient(&self, address: &Address) -> Result<Option<UserId>> {
        // Not `find_user`: a disabled account cannot log in but still receives mail. The
        // domain, or the domain an alias stands for, in the same statement.
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT u.id FROM users u
             WHERE u.localpart = $2 AND u.domain_id = (
                 SELECT id FROM domains WHERE name = $1
                 UNION ALL
                 SELECT domain_id FROM domain_aliases WHERE alias = $1
                 LIMIT 1)",
        )
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(id.map(UserId))
    }

    async fn accept_recipient(
        &self,
        address: &Address,
        size: Option<u64>,
    ) -> Result<Option<UserId>> {
        // In one statement: the user (through domain aliases; not `find_user`: a disabled
        // account cannot log in but still receives mail), whether they or their domain are full
        // for a message of this size, and whether the domain wants temporary failures.
        let row: Option<(i64, bool, bool)> = sqlx::query_as(
            "SELECT u.id,
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
                 LIMIT 1)",
        )
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .bind(to_i64(size.unwrap_or(1)))
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some((id, false, _)) => Ok(Some(UserId(id))),
            Some((_, true, false)) => Err(StoreError::QuotaExceeded),
            Some((_, true, true)) => Err(StoreError::QuotaExceededTemporary),
        }
    }

    async fn begin_blob(&self) -> Result<BlobId> {
        let id = sqlx::query_scalar(sql::<D>(
            "INSERT INTO blobs (pending_node, created_at) VALUES ($1, {now}) RETURNING id",
        ))
        .bind(&self.node)
        .fetch_one(&self.pool)
        .await?;
        Ok(BlobId(id))
    }

    async fn append_chunk(&self, blob: BlobId, seq: u32, data: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
            .bind(blob.0)
            .bind(chunk_number(seq)?)
            .bind(data.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn deliver(&self, parcel: Parcel) -> Result<Vec<Result<()>>> {
        self.deliveries.deliver(parcel).await
    }

    async fn discard_blob(&self, blob: BlobId) -> Result<()> {
        sqlx::query("DELETE FROM blobs WHERE id = $1 AND pending_node IS NOT NULL")
            .bind(blob.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

//! `BulkLoad` (see `crate::bulk`), the same SQL on both backends: users go in as one
//! `INSERT … SELECT` over the list of local parts bound as one parameter (a Postgres array, a
//! SQLite JSON array), and mail through the delivery writer's `write_batch`, whose flush is
//! already set-wide on each backend (`unnest` on Postgres, multi-row `INSERT`s on SQLite).

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};
use tracing::instrument;

use super::{Column, Dialect, SqlStore, Writer, sql};
use crate::group::BatchWriter;
use crate::*;

#[async_trait]
impl<D: Dialect> BulkLoad for SqlStore<D>
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
    #[instrument(skip_all, fields(domain = %domain, users = locals.len()))]
    async fn add_users_bulk(
        &self,
        domain: &DomainName,
        locals: &[LocalPart],
        password_hash: &str,
        scram: Option<&str>,
    ) -> Result<Vec<UserId>> {
        if locals.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = D::begin_write(&self.pool).await?;
        let domain_id = Self::domain_with_room(&mut tx, domain, locals.len()).await?;
        let rows = sqlx::query(sql::<D>(
            "WITH n(localpart) AS (SELECT {each}($5))
             INSERT INTO users (domain_id, localpart, password_hash, created_at, scram_verifier,
                                password_scheme)
             SELECT $1, n.localpart, $2, {now}, $3, $4 FROM n
             RETURNING id, localpart",
        ))
        .bind(domain_id)
        .bind(password_hash)
        .bind(scram.map(str::to_string))
        .bind(password_scheme(password_hash).map(str::to_string))
        .bind(D::names(locals.iter().map(LocalPart::as_str)))
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = HashMap::with_capacity(rows.len());
        for r in &rows {
            ids.insert(r.try_get::<String, _>(1)?, r.try_get::<i64, _>(0)?);
        }
        let ids = locals
            .iter()
            .map(|l| {
                ids.get(l.as_str())
                    .map(|&id| UserId(id))
                    .ok_or_else(|| StoreError::Conflict(format!("{l} is named twice")))
            })
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(ids)
    }

    #[instrument(skip_all, fields(messages = messages.len()))]
    async fn deliver_bulk(&self, messages: Vec<BulkMessage>) -> Result<BulkReport> {
        let mut parcels = Vec::with_capacity(messages.len());
        let mut streamed = Vec::new();
        for m in messages {
            let parcel = match self.parcel(m).await {
                Ok(p) => p,
                Err(e) => {
                    self.discard_all(&streamed).await;
                    return Err(e);
                }
            };
            streamed.extend(parcel.blob);
            parcels.push(parcel);
        }
        let writer = Writer {
            pool: self.pool.clone(),
            uid_prefix: self.uid_prefix.clone(),
        };
        let outcomes = match writer.write_batch(&parcels).await {
            Ok(o) => o,
            Err(e) => {
                self.discard_all(&streamed).await;
                return Err(e);
            }
        };
        let mut report = BulkReport::default();
        for outcome in outcomes.iter().flatten() {
            match outcome {
                Ok(()) => report.stored += 1,
                Err(_) => report.refused += 1,
            }
        }
        Ok(report)
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
    /// The parcel LMTP would hand the writer: a body of one chunk whole, a longer one streamed
    /// into a pending blob but for its last chunk.
    async fn parcel(&self, m: BulkMessage) -> Result<Parcel> {
        let size = m.body.len() as u64;
        let mut parts: Vec<&[u8]> = m.body.chunks(CHUNK_SIZE).collect();
        let tail = parts.pop().unwrap_or_default().to_vec();
        let mut blob = None;
        for (seq, part) in parts.iter().enumerate() {
            let id = match blob {
                Some(id) => id,
                None => *blob.insert(self.begin_blob().await?),
            };
            let seq = u32::try_from(seq).map_err(|_| StoreError::Invalid("body too large".into()));
            if let Err(e) = async { self.append_chunk(id, seq?, part).await }.await {
                self.discard_all(&[id]).await;
                return Err(e);
            }
        }
        Ok(Parcel {
            blob,
            chunks: u32::try_from(parts.len()).unwrap_or(u32::MAX),
            tail,
            size,
            recipients: m.recipients,
            dedup: None,
        })
    }

    /// Drops bodies streamed for a bulk delivery that failed (a restart would too).
    async fn discard_all(&self, blobs: &[BlobId]) {
        for &blob in blobs {
            if let Err(e) = self.discard_blob(blob).await {
                tracing::warn!(error = %e, "discarding a bulk-loaded body failed");
            }
        }
    }
}

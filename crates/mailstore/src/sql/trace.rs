//! Protocol traces (see `crate::trace`), the same SQL on both backends.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};
use tracing::instrument;

use super::{Column, Dialect, RowsAffected, SqlStore};
use crate::convert::*;
use crate::trace::*;
use crate::*;

const TRACE_COLUMNS: &str = "id, user_id, started_by, started_at, until_at, stopped_at, dropped";

#[async_trait]
impl<D: Dialect> Traces for SqlStore<D>
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
    #[instrument(skip_all, fields(user = %address))]
    async fn start_trace(
        &self,
        address: &Address,
        started_by: &str,
        minutes: u32,
        now: i64,
    ) -> Result<TraceInfo> {
        if !(1..=MAX_TRACE_MINUTES).contains(&minutes) {
            return Err(StoreError::Invalid(format!(
                "a trace runs 1 to {MAX_TRACE_MINUTES} minutes"
            )));
        }
        let until = now + i64::from(minutes) * 60_000;
        let mut tx = D::begin_write(&self.pool).await?;
        let user = Self::user_id(&mut tx, address).await?;
        // One trace per user: a new one replaces the old, whose lines go with it.
        sqlx::query(
            "DELETE FROM trace_lines WHERE trace_id IN (SELECT id FROM traces WHERE user_id = $1)",
        )
        .bind(user)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM traces WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO traces (user_id, started_by, started_at, until_at, dropped)
             VALUES ($1, $2, $3, $4, 0) RETURNING id",
        )
        .bind(user)
        .bind(started_by)
        .bind(now)
        .bind(until)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TraceInfo {
            id: TraceId(id),
            user: UserId(user),
            started_by: started_by.to_string(),
            started_at: now,
            until,
            stopped_at: None,
            dropped: 0,
        })
    }

    #[instrument(skip_all, fields(user = %address))]
    async fn stop_trace(&self, address: &Address, now: i64) -> Result<bool> {
        let stopped = sqlx::query(
            "UPDATE traces SET stopped_at = $3
             WHERE stopped_at IS NULL AND until_at > $3 AND user_id = (
                 SELECT u.id FROM users u JOIN domains d ON d.id = u.domain_id
                 WHERE d.name = $1 AND u.localpart = $2)",
        )
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(stopped > 0)
    }

    async fn active_traces(&self, now: i64) -> Result<Vec<ActiveTrace>> {
        let rows: Vec<(i64, i64, String, String)> = sqlx::query_as(
            "SELECT t.id, t.user_id, u.localpart, d.name
             FROM traces t JOIN users u ON u.id = t.user_id JOIN domains d ON d.id = u.domain_id
             WHERE t.stopped_at IS NULL AND t.until_at > $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(trace, user, local, domain)| ActiveTrace {
                trace: TraceId(trace),
                user: UserId(user),
                address: format!("{local}@{domain}").to_lowercase(),
            })
            .collect())
    }

    async fn append_trace_lines(
        &self,
        lines: &[NewTraceLine],
        dropped: &[(TraceId, u64)],
    ) -> Result<()> {
        if lines.is_empty() && dropped.is_empty() {
            return Ok(());
        }
        let mut tx = D::begin_write(&self.pool).await?;
        for l in lines {
            // Postgres text holds no NUL; the frontend already replaced control characters.
            let text = l.line.text.replace('\0', "?");
            sqlx::query(
                "INSERT INTO trace_lines (trace_id, session, at, direction, text)
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM traces WHERE id = $1)",
            )
            .bind(l.trace.0)
            .bind(l.line.session.as_str())
            .bind(l.line.at)
            .bind(l.line.direction.as_str())
            .bind(text.as_str())
            .execute(&mut *tx)
            .await?;
        }
        for &(trace, count) in dropped {
            sqlx::query("UPDATE traces SET dropped = dropped + $2 WHERE id = $1")
                .bind(trace.0)
                .bind(to_i64(count))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn user_trace(
        &self,
        address: &Address,
        now: i64,
    ) -> Result<Option<(TraceInfo, Vec<TraceLine>)>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TRACE_COLUMNS} FROM traces WHERE until_at > $3 AND user_id = (
                 SELECT u.id FROM users u JOIN domains d ON d.id = u.domain_id
                 WHERE d.name = $1 AND u.localpart = $2)"
        )))
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let info = TraceInfo {
            id: TraceId(row.try_get(0)?),
            user: UserId(row.try_get(1)?),
            started_by: row.try_get(2)?,
            started_at: row.try_get(3)?,
            until: row.try_get(4)?,
            stopped_at: row.try_get(5)?,
            dropped: to_u64(row.try_get(6)?),
        };
        let rows: Vec<(String, i64, String, String)> = sqlx::query_as(
            "SELECT session, at, direction, text FROM trace_lines WHERE trace_id = $1
             ORDER BY id LIMIT $2",
        )
        .bind(info.id.0)
        .bind(to_i64(MAX_TRACE_LINES))
        .fetch_all(&self.pool)
        .await?;
        let lines = rows
            .into_iter()
            .map(|(session, at, direction, text)| TraceLine {
                session,
                at,
                direction: Direction::parse(&direction),
                text,
            })
            .collect();
        Ok(Some((info, lines)))
    }

    async fn delete_expired_traces(&self, now: i64) -> Result<u64> {
        // Every frontend calls this every few seconds: a read first, so that nearly always no
        // write transaction (on SQLite, the database's one write lock) is taken.
        let due: Option<i64> =
            sqlx::query_scalar("SELECT id FROM traces WHERE until_at <= $1 LIMIT 1")
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        if due.is_none() {
            return Ok(0);
        }
        let mut tx = D::begin_write(&self.pool).await?;
        sqlx::query(
            "DELETE FROM trace_lines
             WHERE trace_id IN (SELECT id FROM traces WHERE until_at <= $1)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let traces = sqlx::query("DELETE FROM traces WHERE until_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(traces)
    }
}

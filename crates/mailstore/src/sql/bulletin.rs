//! Bulletins (see `crate::bulletin`). Delivery claims mailboxes in batches: each batch is one
//! transaction that first locks the bulletin's row, then records every mailbox it stores a copy
//! in. A second deliverer (another frontend, the CLI) waits on that row and then sees what the
//! first committed, so no mailbox gets two copies; an interrupted run leaves whole batches
//! behind and the next run carries on with the mailboxes not yet recorded.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::{Column, Dialect, SqlStore, sql};
use crate::bulletin::*;
use crate::convert::*;
use crate::*;

/// Mailboxes written per transaction: small enough that other writers (SQLite has one write
/// lock) are not held up long, large enough that thousands of mailboxes take few commits.
const BATCH: i64 = 200;

const COLUMNS: &str = "b.id, d.name, b.subject, b.body, b.due_at, b.author, b.created_at, b.state,
                       b.delivered_at, b.recipients";

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
    fn bulletin_from_row(row: &D::Row) -> Result<Bulletin> {
        let domain: Option<String> = row.try_get(1)?;
        let scope = match domain {
            None => BulletinScope::All,
            Some(name) => BulletinScope::Domain(
                DomainName::parse(&name).map_err(|e| StoreError::Invalid(e.to_string()))?,
            ),
        };
        let state: String = row.try_get(7)?;
        Ok(Bulletin {
            id: BulletinId(row.try_get(0)?),
            scope,
            subject: row.try_get(2)?,
            body: row.try_get(3)?,
            due_at: row.try_get(4)?,
            author: row.try_get(5)?,
            created_at: row.try_get(6)?,
            state: BulletinState::parse(&state),
            delivered_at: row.try_get(8)?,
            recipients: to_u64(row.try_get(9)?),
        })
    }

    /// Delivers one batch of a bulletin; false once none is left (the bulletin is then marked
    /// delivered, or was already done or cancelled).
    async fn deliver_bulletin_batch(&self, id: i64, now: i64) -> Result<BatchOutcome> {
        let mut tx = D::begin_write(&self.pool).await?;
        let row: Option<(Option<i64>, String, String, i64, String)> = sqlx::query_as(sql::<D>(
            "SELECT domain_id, subject, body, due_at, state FROM bulletins WHERE id = $1
                 {lock_rows}",
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((domain, subject, body, due_at, state)) = row else {
            return Ok(BatchOutcome::Gone);
        };
        if BulletinState::parse(&state) != BulletinState::Scheduled || due_at > now {
            return Ok(BatchOutcome::Gone);
        }
        let created = D::millis("u.created_at");
        let users: Vec<(i64, i64, String, String)> = sqlx::query_as(sql::<D>(&format!(
            "SELECT u.id, u.domain_id, u.localpart, d.name
             FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE ($2 IS NULL OR u.domain_id = $2) AND {created} <= $3
               AND NOT EXISTS (SELECT 1 FROM bulletin_deliveries x
                               WHERE x.bulletin_id = $1 AND x.user_id = u.id)
             ORDER BY u.domain_id, u.id LIMIT $4"
        )))
        .bind(id)
        .bind(domain)
        .bind(due_at)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if users.is_empty() {
            sqlx::query(
                "UPDATE bulletins SET state = 'delivered', delivered_at = $2,
                     recipients = (SELECT count(*) FROM bulletin_deliveries WHERE bulletin_id = $1)
                 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(BatchOutcome::Finished);
        }
        // Domain before its users, in id order: the order deliveries lock them in.
        let mut start = 0;
        while start < users.len() {
            let domain = users[start].1;
            let end = users[start..]
                .iter()
                .position(|u| u.1 != domain)
                .map_or(users.len(), |n| start + n);
            let ids: Vec<i64> = users[start..end].iter().map(|u| u.0).collect();
            Self::lock_rows(&mut tx, domain, &ids).await?;
            start = end;
        }
        let prefix = Self::prefix(&self.uid_prefix, &mut tx).await?;
        for (user, _, local, domain) in &users {
            sqlx::query("INSERT INTO bulletin_deliveries (bulletin_id, user_id) VALUES ($1, $2)")
                .bind(id)
                .bind(user)
                .execute(&mut *tx)
                .await?;
            let message = bulletin_message(
                BulletinId(id),
                &subject,
                &body,
                &format!("{local}@{domain}"),
                domain,
                now / 1000,
            );
            let uid = Self::next_uid(&mut tx, &prefix).await?;
            Self::insert_whole_message(&mut tx, *user, &uid, &message, None).await?;
        }
        sqlx::query("UPDATE bulletins SET recipients = recipients + $2 WHERE id = $1")
            .bind(id)
            .bind(to_i64(users.len() as u64))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(BatchOutcome::More)
    }
}

enum BatchOutcome {
    More,
    Finished,
    Gone,
}

#[async_trait]
impl<D: Dialect> Bulletins for SqlStore<D>
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
    async fn post_bulletin(&self, bulletin: &NewBulletin, now: i64) -> Result<BulletinId> {
        let mut tx = D::begin_write(&self.pool).await?;
        let domain = match &bulletin.scope {
            BulletinScope::All => None,
            BulletinScope::Domain(name) => Some(Self::domain_id(&mut tx, name).await?),
        };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO bulletins (domain_id, subject, body, due_at, author, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(domain)
        .bind(bulletin.subject.as_str())
        .bind(bulletin.body.as_str())
        .bind(bulletin.due_at.max(now))
        .bind(bulletin.author.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BulletinId(id))
    }

    async fn bulletin(&self, id: BulletinId) -> Result<Option<Bulletin>> {
        let row = sqlx::query(sql::<D>(&format!(
            "SELECT {COLUMNS} FROM bulletins b LEFT JOIN domains d ON d.id = b.domain_id
             WHERE b.id = $1"
        )))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::bulletin_from_row).transpose()
    }

    async fn list_bulletins(&self, scope: &Scope, limit: u64) -> Result<Vec<Bulletin>> {
        let (all, names) = super::scope_binds::<D>(scope);
        let rows = sqlx::query(sql::<D>(&format!(
            "SELECT {COLUMNS} FROM bulletins b LEFT JOIN domains d ON d.id = b.domain_id
             WHERE $1 OR d.name IN (SELECT {{each}}($2))
             ORDER BY b.id DESC LIMIT $3"
        )))
        .bind(all)
        .bind(names)
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::bulletin_from_row).collect()
    }

    async fn deliver_bulletins(&self, now: i64) -> Result<Vec<BulletinId>> {
        let due: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM bulletins WHERE state = 'scheduled' AND due_at <= $1
             ORDER BY due_at, id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut finished = Vec::new();
        for id in due {
            loop {
                match self.deliver_bulletin_batch(id, now).await? {
                    BatchOutcome::More => {}
                    BatchOutcome::Finished => {
                        finished.push(BulletinId(id));
                        break;
                    }
                    BatchOutcome::Gone => break,
                }
            }
        }
        Ok(finished)
    }

    async fn cancel_bulletin(&self, id: BulletinId) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        let state: Option<String> = sqlx::query_scalar(sql::<D>(
            "SELECT state FROM bulletins WHERE id = $1 {lock_rows}",
        ))
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        match state.as_deref().map(BulletinState::parse) {
            None => Err(StoreError::NotFound(format!("bulletin {id}"))),
            Some(BulletinState::Scheduled) => {
                sqlx::query("UPDATE bulletins SET state = 'cancelled' WHERE id = $1")
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
            Some(state) => Err(StoreError::Conflict(format!(
                "bulletin {id} is already {}",
                state.as_str()
            ))),
        }
    }
}

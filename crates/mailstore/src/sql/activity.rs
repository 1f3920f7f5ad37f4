//! What a customer did (see `crate::activity`): the login history, the per-day retrieved and
//! deleted counts, and their reading and pruning. The successful login's row is written by each
//! dialect's `lock`, in the transaction (SQLite) or statement (Postgres) that takes the maildrop
//! lock, so a login costs no extra round trip for it; the last delivery is set by each dialect's
//! `flush`.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Transaction, Type};

use super::{Column, Dialect, RowsAffected, SqlStore};
use crate::activity::day_of;
use crate::convert::*;
use crate::*;

/// Statements that mean one thing on both backends.
const INSERT_EVENT: &str =
    "INSERT INTO login_events (user_id, domain_id, at, ip, mechanism, tls, success, reason, token)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

const ADD_DAY: &str =
    "INSERT INTO user_daily_stats (user_id, day, retrieved, retrieved_bytes, deleted, deleted_bytes)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (user_id, day) DO UPDATE SET
         retrieved = user_daily_stats.retrieved + excluded.retrieved,
         retrieved_bytes = user_daily_stats.retrieved_bytes + excluded.retrieved_bytes,
         deleted = user_daily_stats.deleted + excluded.deleted,
         deleted_bytes = user_daily_stats.deleted_bytes + excluded.deleted_bytes";

/// An event row: at, ip, mechanism, tls, success, reason.
const EVENT_COLUMNS: &str = "at, ip, mechanism, tls, success, reason";

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
    /// The successful login that took lock `token`, inside the lock's transaction.
    pub(crate) async fn record_login_in(
        tx: &mut Transaction<'_, D>,
        user: UserId,
        login: &LoginRecord,
        at: i64,
        token: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO login_events (user_id, domain_id, at, ip, mechanism, tls, success, token)
             SELECT id, domain_id, $2, $3, $4, $5, true, $6 FROM users WHERE id = $1",
        )
        .bind(user.0)
        .bind(at)
        .bind(login.ip.map(|ip| ip.to_string()))
        .bind(login.mechanism.as_str())
        .bind(login.tls)
        .bind(token)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// A login the lock refused (`InUse`, `LoginDelay`): the password was right.
    pub(crate) async fn record_refused(
        &self,
        user: UserId,
        login: &LoginRecord,
        reason: FailureReason,
    ) -> Result<()> {
        let at = now_ms();
        let mut tx = D::begin_write(&self.pool).await?;
        sqlx::query(
            "INSERT INTO login_events (user_id, domain_id, at, ip, mechanism, tls, success, reason)
             SELECT id, domain_id, $2, $3, $4, $5, false, $6 FROM users WHERE id = $1",
        )
        .bind(user.0)
        .bind(at)
        .bind(login.ip.map(|ip| ip.to_string()))
        .bind(login.mechanism.as_str())
        .bind(login.tls)
        .bind(reason.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO hourly_stats (hour, domain_id, shard, failed_logins)
             SELECT $2, domain_id, id % 16, 1 FROM users WHERE id = $1
             ON CONFLICT (hour, domain_id, shard)
             DO UPDATE SET failed_logins = hourly_stats.failed_logins + 1",
        )
        .bind(user.0)
        .bind(at.div_euclid(3_600_000))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn record_failed(&self, failure: &FailedLogin) -> Result<()> {
        let mut reason = failure.reason.clone();
        let (user, domain) = match (&failure.address, &failure.domain) {
            (Some(address), _) => {
                let row: Option<(i64, i64, bool)> = sqlx::query_as(
                    "SELECT u.id, d.id, u.enabled AND d.enabled
                     FROM users u JOIN domains d ON d.id = u.domain_id
                     WHERE d.name = $1 AND u.localpart = $2",
                )
                .bind(address.domain.as_str())
                .bind(address.local.as_str())
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some((user, domain, enabled)) => {
                        if !enabled {
                            reason = FailureReason::Disabled;
                        }
                        (Some(user), Some(domain))
                    }
                    None => {
                        reason = FailureReason::UnknownUser;
                        (None, self.domain_id_of(&address.domain).await?)
                    }
                }
            }
            (None, Some(domain)) => (None, self.domain_id_of(domain).await?),
            (None, None) => (None, None),
        };
        let at = now_ms();
        let mut tx = D::begin_write(&self.pool).await?;
        sqlx::query(INSERT_EVENT)
            .bind(user)
            .bind(domain)
            .bind(at)
            .bind(failure.login.ip.map(|ip| ip.to_string()))
            .bind(failure.login.mechanism.as_str())
            .bind(failure.login.tls)
            .bind(false)
            .bind(Some(reason.as_str().to_string()))
            .bind(None::<i64>)
            .execute(&mut *tx)
            .await?;
        // The dashboard's failed logins per hour read these counters, not the events.
        let hour = at.div_euclid(3_600_000);
        let count = match domain {
            Some(domain) => sqlx::query(
                "INSERT INTO hourly_stats (hour, domain_id, failed_logins) VALUES ($1, $2, 1)
                 ON CONFLICT (hour, domain_id, shard)
                 DO UPDATE SET failed_logins = hourly_stats.failed_logins + 1",
            )
            .bind(hour)
            .bind(domain),
            None => sqlx::query(
                "INSERT INTO hourly_failures (hour, failed) VALUES ($1, 1)
                 ON CONFLICT (hour) DO UPDATE SET failed = hourly_failures.failed + 1",
            )
            .bind(hour),
        };
        count.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn domain_id_of(&self, name: &DomainName) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT id FROM domains WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Adds to a user's stats of today.
    async fn add_day(
        tx: &mut Transaction<'_, D>,
        user: i64,
        retrieved: Transfer,
        deleted: Transfer,
    ) -> Result<()> {
        sqlx::query(ADD_DAY)
            .bind(user)
            .bind(day_of(now_ms()))
            .bind(to_i64(retrieved.messages))
            .bind(to_i64(retrieved.octets))
            .bind(to_i64(deleted.messages))
            .bind(to_i64(deleted.octets))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// `Maildrops::end_session`. Without anything to count or delete it is the one statement
    /// `commit_update` and `unlock` are.
    pub(super) async fn end_session_in(&self, lease: &Lease, end: &SessionEnd<'_>) -> Result<()> {
        let (update, retrieved) = (end.update, end.retrieved);
        let deleting = update.is_some_and(|d| !d.is_empty());
        if retrieved.messages == 0 && !deleting {
            return match update {
                Some(deleted) => self.commit_update(lease, deleted).await,
                None => self.unlock(lease).await,
            };
        }
        self.held.remove(lease.token);
        // A session that deleted nothing writes only its bookkeeping (`soft`).
        let mut tx = D::begin_write(if deleting { &self.pool } else { &self.soft }).await?;
        // As in `commit_update`: deleting the lease row first also row-locks it (Postgres).
        let held = sqlx::query("DELETE FROM maildrop_locks WHERE user_id = $1 AND token = $2")
            .bind(lease.user.0)
            .bind(lease.token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Before the deletions: the alarms read the deleted messages' delivery times.
        let alarms = self.check_alarms_in(&mut tx, lease.user.0, end).await?;
        let deleted = match update {
            Some(_) if held == 0 => return Err(StoreError::LeaseLost),
            Some(ids) if !ids.is_empty() => {
                let how = super::Deleting::Pop3 {
                    token: lease.token,
                    login: end.login,
                };
                Self::delete_messages(&mut tx, lease.user.0, ids, how).await?
            }
            // Without QUIT (or with nothing marked) nothing is deleted; what was retrieved was
            // retrieved all the same, lease or not.
            _ => Transfer::default(),
        };
        Self::add_day(&mut tx, lease.user.0, retrieved, deleted).await?;
        tx.commit().await?;
        alarms.count();
        Ok(())
    }

    pub(super) async fn activity_of(&self, address: &Address) -> Result<Option<UserActivity>> {
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT u.id, u.last_delivery FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE d.name = $1 AND u.localpart = $2",
        )
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some((user, last_delivery)) = row else {
            return Ok(None);
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM login_events WHERE user_id = $1
             ORDER BY at DESC, id DESC LIMIT $2"
        )))
        .bind(user)
        .bind(to_i64(RECENT_LOGINS))
        .fetch_all(&self.pool)
        .await?;
        let logins = rows.iter().map(event).collect::<Result<Vec<_>>>()?;
        // Nearly always among the recent ones; older only after a run of failures.
        let last_login = match logins.iter().find(|e| e.failure.is_none()) {
            Some(e) => Some(e.clone()),
            None => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM login_events WHERE user_id = $1 AND success
                 ORDER BY at DESC, id DESC LIMIT 1"
            )))
            .bind(user)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(event)
            .transpose()?,
        };
        let sums = sqlx::query(
            "SELECT CAST(COALESCE(SUM(retrieved), 0) AS BIGINT),
                    CAST(COALESCE(SUM(retrieved_bytes), 0) AS BIGINT),
                    CAST(COALESCE(SUM(deleted), 0) AS BIGINT),
                    CAST(COALESCE(SUM(deleted_bytes), 0) AS BIGINT)
             FROM user_daily_stats WHERE user_id = $1 AND day > $2",
        )
        .bind(user)
        .bind(day_of(now_ms()) - ACTIVITY_DAYS)
        .fetch_one(&self.pool)
        .await?;
        let transfer = |m: usize, o: usize| -> Result<Transfer> {
            Ok(Transfer {
                messages: to_u64(sums.try_get(m)?),
                octets: to_u64(sums.try_get(o)?),
            })
        };
        Ok(Some(UserActivity {
            last_login,
            last_delivery,
            retrieved: transfer(0, 1)?,
            deleted: transfer(2, 3)?,
            logins,
        }))
    }

    pub(super) async fn prune_activity_before(&self, before_ms: i64) -> Result<u64> {
        let events = sqlx::query("DELETE FROM login_events WHERE at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let days = sqlx::query("DELETE FROM user_daily_stats WHERE day < $1")
            .bind(day_of(before_ms))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(events + days)
    }
}

fn event<R: Row>(r: &R) -> Result<LoginEvent>
where
    usize: ColumnIndex<R>,
    i64: Column<R::Database>,
    bool: Column<R::Database>,
    String: Column<R::Database>,
    Option<String>: Column<R::Database>,
{
    let success: bool = r.try_get(4)?;
    let reason: Option<String> = r.try_get(5)?;
    Ok(LoginEvent {
        at: r.try_get(0)?,
        ip: r.try_get(1)?,
        mechanism: r.try_get(2)?,
        tls: r.try_get(3)?,
        failure: (!success).then(|| FailureReason::parse(reason.as_deref().unwrap_or("unknown"))),
    })
}

//! Re-download alarms (see `crate::alarm`): detected in `end_session_in`'s transaction, before
//! its deletions (the deleted rows' delivery times are read here), and read for the admin pages.
//!
//! Times are the database's clock moved by the lease clock (as LOGIN-DELAY's), so tests can
//! age mail and let the hour pass without sleeping.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Transaction, Type};

use super::{Column, Dialect, RowsAffected, SqlStore, scope_binds, sql};
use crate::alarm::*;
use crate::convert::*;
use crate::*;

/// Raised in a session's transaction; counted in the metrics once it committed.
#[derive(Debug, Default)]
pub(crate) struct Raised(Vec<(String, &'static str)>);

impl Raised {
    pub(crate) fn count(self) {
        for (domain, kind) in self.0 {
            metrics::counter!(ALARM_COUNTER, "domain" => domain, "kind" => kind).increment(1);
        }
    }
}

/// The columns `alarm` reads.
const ALARM_COLUMNS: &str =
    "u.localpart, d.name, a.kind, a.at, a.count, a.ip, a.mechanism, a.previous_ip
     FROM alarms a JOIN users u ON u.id = a.user_id JOIN domains d ON d.id = a.domain_id";

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
    /// Marks what the session retrieved as retrieved and checks both rules; call it before the
    /// session's deletions. Costs nothing for a session that retrieved nothing and deleted
    /// nothing; one statement for one that only retrieved a few messages.
    pub(super) async fn check_alarms_in(
        &self,
        tx: &mut Transaction<'_, D>,
        user: i64,
        end: &SessionEnd<'_>,
    ) -> Result<Raised> {
        let offset = self.clock.offset_ms();
        let mut raised = Raised::default();
        let ip = end.login.and_then(|l| l.ip).map(|ip| ip.to_string());
        let mechanism = end.login.map(|l| l.mechanism.clone());
        if !end.retrieved_ids.is_empty() {
            let ids: Vec<i64> = end.retrieved_ids.iter().map(|m| m.0).collect();
            let first = sqlx::query(sql::<D>(
                "UPDATE messages SET first_retrieved = {now_ms} + $3
                 WHERE user_id = $1 AND id IN (SELECT {each}($2)) AND first_retrieved IS NULL",
            ))
            .bind(user)
            .bind(D::ids(&ids))
            .bind(offset)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            let again = (ids.len() as u64).saturating_sub(first);
            // Below this no maildrop can qualify: the common case needs no second statement.
            if again * 100 >= REDOWNLOAD_MIN_MESSAGES * REDOWNLOAD_PERCENT {
                let size: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM messages WHERE user_id = $1")
                        .bind(user)
                        .fetch_one(&mut **tx)
                        .await?;
                let size = to_u64(size);
                if size >= REDOWNLOAD_MIN_MESSAGES && again * 100 >= size * REDOWNLOAD_PERCENT {
                    let alarm = Found {
                        kind: AlarmKind::Redownload,
                        count: again,
                        ip: ip.clone(),
                        mechanism: mechanism.clone(),
                        previous_ip: None,
                    };
                    Self::record_alarm(tx, user, offset, alarm, &mut raised).await?;
                }
            }
        }
        let deleting = end.update.filter(|ids| !ids.is_empty());
        if let (Some(deleted), Some(ip)) = (deleting, ip.as_deref()) {
            let ids: Vec<i64> = deleted.iter().map(|m| m.0).collect();
            let (count, old): (i64, i64) = sqlx::query_as(sql::<D>(&format!(
                "SELECT count(*), count(CASE WHEN delivered_at < {} THEN 1 END)
                 FROM messages WHERE user_id = $1 AND id IN (SELECT {{each}}($2))",
                D::after("$3")
            )))
            .bind(user)
            .bind(D::ids(&ids))
            .bind(offset - QUICK_DELETE_SECS * 1000)
            .fetch_one(&mut **tx)
            .await?;
            if count > 0 && old == 0 {
                let (before_at, before_ip): (Option<i64>, Option<String>) = sqlx::query_as(
                    "SELECT quick_delete_at, quick_delete_ip FROM users WHERE id = $1",
                )
                .bind(user)
                .fetch_one(&mut **tx)
                .await?;
                let now: i64 = sqlx::query_scalar(sql::<D>(
                    "UPDATE users SET quick_delete_at = {now_ms} + $2, quick_delete_ip = $3
                     WHERE id = $1 RETURNING quick_delete_at",
                ))
                .bind(user)
                .bind(offset)
                .bind(ip)
                .fetch_one(&mut **tx)
                .await?;
                let recent = before_at.is_some_and(|at| at > now - QUICK_DELETE_WINDOW_SECS * 1000);
                if recent && before_ip.as_deref().is_some_and(|before| before != ip) {
                    let alarm = Found {
                        kind: AlarmKind::QuickDelete,
                        count: to_u64(count),
                        ip: Some(ip.to_string()),
                        mechanism,
                        previous_ip: before_ip,
                    };
                    Self::record_alarm(tx, user, offset, alarm, &mut raised).await?;
                }
            }
        }
        Ok(raised)
    }

    /// Stores an alarm unless the user had one of its kind within `ALARM_QUIET_SECS`.
    async fn record_alarm(
        tx: &mut Transaction<'_, D>,
        user: i64,
        offset: i64,
        alarm: Found,
        raised: &mut Raised,
    ) -> Result<()> {
        let kind = match alarm.kind {
            AlarmKind::Redownload => "redownload",
            AlarmKind::QuickDelete => "quick_delete",
            AlarmKind::Other(_) => return Ok(()),
        };
        let stored = sqlx::query(sql::<D>(
            "INSERT INTO alarms (user_id, domain_id, kind, at, count, ip, mechanism, previous_ip)
             SELECT u.id, u.domain_id, $2, {now_ms} + $3, $4, $5, $6, $7 FROM users u
             WHERE u.id = $1 AND NOT EXISTS (
                 SELECT 1 FROM alarms a
                 WHERE a.user_id = $1 AND a.kind = $2 AND a.at > {now_ms} + $3 - $8)",
        ))
        .bind(user)
        .bind(kind)
        .bind(offset)
        .bind(to_i64(alarm.count))
        .bind(alarm.ip.clone())
        .bind(alarm.mechanism.clone())
        .bind(alarm.previous_ip.clone())
        .bind(ALARM_QUIET_SECS * 1000)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if stored == 0 {
            return Ok(());
        }
        let (local, domain): (String, String) = sqlx::query_as(
            "SELECT u.localpart, d.name FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE u.id = $1",
        )
        .bind(user)
        .fetch_one(&mut **tx)
        .await?;
        tracing::warn!(
            user = %format_args!("{local}@{domain}"),
            kind,
            count = alarm.count,
            client = alarm.ip.as_deref().unwrap_or("-"),
            "re-download alarm"
        );
        raised.0.push((domain, kind));
        Ok(())
    }
}

/// An alarm a rule found, before it is stored.
struct Found {
    kind: AlarmKind,
    count: u64,
    ip: Option<String>,
    mechanism: Option<String>,
    previous_ip: Option<String>,
}

#[async_trait]
impl<D: Dialect> Alarms for SqlStore<D>
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
    async fn recent_alarms(&self, scope: &Scope, since_ms: i64, limit: u64) -> Result<Vec<Alarm>> {
        let (all, list) = scope_binds::<D>(scope);
        let rows = sqlx::query(sql::<D>(&format!(
            "SELECT {ALARM_COLUMNS}
             WHERE a.at >= $3 AND ($1 OR d.name IN (SELECT {{each}}($2)))
             ORDER BY a.at DESC, a.id DESC LIMIT $4"
        )))
        .bind(all)
        .bind(list)
        .bind(since_ms)
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alarm).collect()
    }

    async fn user_alarms(&self, address: &Address, limit: u64) -> Result<Vec<Alarm>> {
        let rows = sqlx::query(sql::<D>(&format!(
            "SELECT {ALARM_COLUMNS}
             WHERE d.name = $1 AND u.localpart = $2
             ORDER BY a.at DESC, a.id DESC LIMIT $3"
        )))
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alarm).collect()
    }

    async fn prune_alarms(&self, before_ms: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM alarms WHERE at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

fn alarm<R: Row>(r: &R) -> Result<Alarm>
where
    usize: ColumnIndex<R>,
    i64: Column<R::Database>,
    String: Column<R::Database>,
    Option<String>: Column<R::Database>,
{
    Ok(Alarm {
        address: Address {
            local: LocalPart::parse(&r.try_get::<String, _>(0)?)?,
            domain: DomainName::parse(&r.try_get::<String, _>(1)?)?,
        },
        kind: AlarmKind::parse(&r.try_get::<String, _>(2)?),
        at: r.try_get(3)?,
        count: to_u64(r.try_get(4)?),
        ip: r.try_get(5)?,
        mechanism: r.try_get(6)?,
        previous_ip: r.try_get(7)?,
    })
}

//! The self-service page's store role (see `crate::self_service`), one implementation for both
//! backends.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};
use tracing::instrument;

use super::directory::found;
use super::{Column, Dialect, RowsAffected, SqlStore};
use crate::*;

/// The condition under which a user may use the page, on `users u JOIN domains d`.
const MAY_USE: &str = "u.enabled AND d.enabled AND d.self_service
    AND (d.migrate_from IS NULL OR u.migrated_at IS NOT NULL)";

#[async_trait]
impl<D: Dialect> SelfService for SqlStore<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'a> &'a str: Encode<'a, D> + Decode<'a, D> + Type<D>,
    i64: Column<D>,
    bool: Column<D>,
    String: Column<D>,
    usize: ColumnIndex<D::Row>,
{
    async fn self_service(&self, domain: &DomainName) -> Result<bool> {
        let on: Option<bool> =
            sqlx::query_scalar("SELECT self_service FROM domains WHERE name = $1")
                .bind(domain.as_str())
                .fetch_optional(&self.pool)
                .await?;
        on.ok_or_else(|| StoreError::NotFound(format!("domain {domain}")))
    }

    #[instrument(skip_all, fields(domain = %domain))]
    async fn set_self_service(&self, domain: &DomainName, on: bool) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query("UPDATE domains SET self_service = $1 WHERE name = $2")
            .bind(on)
            .bind(domain.as_str())
            .execute(&mut *tx)
            .await?;
        found(updated.rows_affected(), || format!("domain {domain}"))?;
        if !on {
            sqlx::query(
                "DELETE FROM user_sessions WHERE user_id IN
                 (SELECT u.id FROM users u JOIN domains d ON d.id = u.domain_id WHERE d.name = $1)",
            )
            .bind(domain.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn self_service_user(&self, address: &Address) -> Result<Option<SelfServiceUser>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT u.id, u.password_hash FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE d.name = $1 AND u.localpart = $2 AND {MAY_USE}"
        )))
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SelfServiceUser {
                id: UserId(r.try_get(0)?),
                password_hash: r.try_get(1)?,
            })
        })
        .transpose()
    }

    #[instrument(skip_all, fields(user = user.0))]
    async fn create_user_session(
        &self,
        id_hash: &str,
        user: UserId,
        csrf: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_sessions (id_hash, user_id, csrf, created_at, last_seen)
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(id_hash)
        .bind(user.0)
        .bind(csrf)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn user_session(&self, id_hash: &str) -> Result<Option<UserSession>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT s.user_id, u.localpart, d.name, s.csrf, s.created_at, s.last_seen
             FROM user_sessions s JOIN users u ON u.id = s.user_id
             JOIN domains d ON d.id = u.domain_id
             WHERE s.id_hash = $1 AND {MAY_USE}"
        )))
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(UserSession {
                user: UserId(r.try_get(0)?),
                address: Address {
                    local: LocalPart::parse(&r.try_get::<String, _>(1)?)?,
                    domain: DomainName::parse(&r.try_get::<String, _>(2)?)?,
                },
                csrf: r.try_get(3)?,
                created_at: r.try_get(4)?,
                last_seen: r.try_get(5)?,
            })
        })
        .transpose()
    }

    async fn touch_user_session(&self, id_hash: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE user_sessions SET last_seen = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn delete_user_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM user_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn end_user_sessions(&self, address: &Address, keep: Option<&str>) -> Result<()> {
        // No id hash is empty (they are SHA-256 digests), so "" keeps none.
        sqlx::query(
            "DELETE FROM user_sessions WHERE id_hash <> $3 AND user_id IN
             (SELECT u.id FROM users u JOIN domains d ON d.id = u.domain_id
              WHERE d.name = $1 AND u.localpart = $2)",
        )
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .bind(keep.unwrap_or(""))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn prune_user_sessions(&self, idle_before: i64, created_before: i64) -> Result<()> {
        sqlx::query("DELETE FROM user_sessions WHERE last_seen < $1 OR created_at < $2")
            .bind(idle_before)
            .bind(created_before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

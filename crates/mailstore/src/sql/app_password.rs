//! App passwords (see `crate::app_password`), one implementation for both backends.
//!
//! Revoking and binding a session to an app password meet on the app password's row: revoke
//! deletes it (a row lock on Postgres) before it deletes the locks marked with it, and the bind
//! reads it with `{lock_rows}` before it marks a lock. Whichever goes first, a session that
//! logged in with a revoked password either finds it gone at the bind, or has its lock marked
//! before the revoke looks for marked locks.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};
use tracing::instrument;

use super::directory::{conflict, found};
use super::{Column, Dialect, RowsAffected, SqlStore, sql};
use crate::convert::*;
use crate::*;

fn listed<R: Row>(r: &R) -> Result<AppPassword>
where
    usize: ColumnIndex<R>,
    i64: for<'a> Decode<'a, R::Database> + Type<R::Database>,
    String: for<'a> Decode<'a, R::Database> + Type<R::Database>,
    Option<i64>: for<'a> Decode<'a, R::Database> + Type<R::Database>,
    Option<String>: for<'a> Decode<'a, R::Database> + Type<R::Database>,
{
    Ok(AppPassword {
        id: r.try_get(0)?,
        label: r.try_get(1)?,
        created_at: r.try_get(2)?,
        last_used_at: r.try_get(3)?,
        last_ip: r.try_get(4)?,
        last_mechanism: r.try_get(5)?,
    })
}

const LISTED: &str = "id, label, created_at, last_used_at, last_ip, last_mechanism";

#[async_trait]
impl<D: Dialect> AppPasswords for SqlStore<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'a> &'a str: Encode<'a, D> + Decode<'a, D> + Type<D>,
    i64: Column<D>,
    bool: Column<D>,
    String: Column<D>,
    Option<i64>: Column<D>,
    Option<String>: Column<D>,
    Vec<u8>: Column<D>,
    Option<Vec<u8>>: Column<D>,
    usize: ColumnIndex<D::Row>,
{
    #[instrument(skip_all, fields(user = %address))]
    async fn add_app_password(
        &self,
        address: &Address,
        new: &NewAppPassword<'_>,
    ) -> Result<AppPassword> {
        let label = parse_label(new.label)?;
        let mut tx = D::begin_write(&self.pool).await?;
        let user = Self::user_id(&mut tx, address).await?;
        // The user's row is locked so that two adds at once cannot both pass the limit.
        sqlx::query(sql::<D>("SELECT id FROM users WHERE id = $1 {lock_rows}"))
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM app_passwords WHERE user_id = $1")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        if held >= to_i64(MAX_APP_PASSWORDS as u64) {
            return Err(StoreError::Invalid(format!(
                "a user may have at most {MAX_APP_PASSWORDS} app passwords: revoke one first"
            )));
        }
        let row = sqlx::query(sql::<D>(&format!(
            "INSERT INTO app_passwords (user_id, label, tag, password_hash, scram_verifier,
                 created_at)
             VALUES ($1, $2, $3, $4, $5, {{now_ms}})
             RETURNING {LISTED}"
        )))
        .bind(user)
        .bind(label.as_str())
        .bind(new.tag)
        .bind(new.password_hash)
        .bind(new.scram)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            conflict(
                e,
                format!("{address} already has an app password {label:?}"),
            )
        })?;
        let added = listed(&row)?;
        tx.commit().await?;
        Ok(added)
    }

    async fn list_app_passwords(&self, address: &Address) -> Result<Vec<AppPassword>> {
        let mut tx = self.pool.begin().await?;
        let user = Self::user_id(&mut tx, address).await?;
        let rows = sqlx::query(sql::<D>(&format!(
            "SELECT {LISTED} FROM app_passwords WHERE user_id = $1 ORDER BY label {{bytewise}}"
        )))
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
        rows.iter().map(listed).collect()
    }

    #[instrument(skip_all, fields(user = %address))]
    async fn revoke_app_password(&self, address: &Address, label: &str) -> Result<u64> {
        let mut tx = D::begin_write(&self.pool).await?;
        let user = Self::user_id(&mut tx, address).await?;
        let id: Option<i64> = sqlx::query_scalar(
            "DELETE FROM app_passwords WHERE user_id = $1 AND label = $2 RETURNING id",
        )
        .bind(user)
        .bind(label.trim())
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or_else(|| {
            StoreError::NotFound(format!("app password {:?} of {address}", label.trim()))
        })?;
        let ended = sqlx::query("DELETE FROM maildrop_locks WHERE app_password_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ended.rows_affected())
    }

    async fn app_password_secrets(&self, user: UserId) -> Result<Vec<AppPasswordSecret>> {
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT id, tag, password_hash, scram_verifier FROM app_passwords
             WHERE user_id = $1 ORDER BY id",
        )
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, tag, password_hash, scram)| AppPasswordSecret {
                id,
                tag,
                password_hash,
                scram,
            })
            .collect())
    }

    async fn scram_salt_sources(&self, address: &Address) -> Result<(Option<String>, Vec<String>)> {
        let mut tx = self.pool.begin().await?;
        let user = Self::user_id(&mut tx, address).await?;
        let main: Option<String> =
            sqlx::query_scalar("SELECT scram_verifier FROM users WHERE id = $1")
                .bind(user)
                .fetch_one(&mut *tx)
                .await?;
        let apps: Vec<String> = sqlx::query_scalar(
            "SELECT scram_verifier FROM app_passwords WHERE user_id = $1 ORDER BY id",
        )
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
        Ok((main, apps))
    }

    async fn record_app_password_use(
        &self,
        id: i64,
        ip: Option<&str>,
        mechanism: &str,
    ) -> Result<()> {
        sqlx::query(sql::<D>(
            "UPDATE app_passwords SET last_used_at = {now_ms}, last_ip = $2, last_mechanism = $3
             WHERE id = $1",
        ))
        .bind(id)
        .bind(ip.map(str::to_string))
        .bind(mechanism)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn bind_lease_to_app_password(&self, lease: &Lease, id: i64) -> Result<bool> {
        let mut tx = D::begin_write(&self.pool).await?;
        let alive: Option<i64> = sqlx::query_scalar(sql::<D>(
            "SELECT id FROM app_passwords WHERE id = $1 AND user_id = $2 {lock_rows}",
        ))
        .bind(id)
        .bind(lease.user.0)
        .fetch_optional(&mut *tx)
        .await?;
        if alive.is_none() {
            return Ok(false);
        }
        let marked = sqlx::query(
            "UPDATE maildrop_locks SET app_password_id = $1 WHERE user_id = $2 AND token = $3",
        )
        .bind(id)
        .bind(lease.user.0)
        .bind(lease.token)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(marked.rows_affected() == 1)
    }

    async fn app_passwords_only(&self, domain: &DomainName) -> Result<bool> {
        let only: Option<bool> =
            sqlx::query_scalar("SELECT app_passwords_only FROM domains WHERE name = $1")
                .bind(domain.as_str())
                .fetch_optional(&self.pool)
                .await?;
        only.ok_or_else(|| StoreError::NotFound(format!("domain {domain}")))
    }

    #[instrument(skip_all, fields(domain = %domain))]
    async fn set_app_passwords_only(&self, domain: &DomainName, only: bool) -> Result<()> {
        let updated = sqlx::query("UPDATE domains SET app_passwords_only = $1 WHERE name = $2")
            .bind(only)
            .bind(domain.as_str())
            .execute(&self.pool)
            .await?;
        found(updated.rows_affected(), || format!("domain {domain}"))
    }
}

//! `Directory`: provisioning and the lookups a login makes.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};
use tracing::instrument;

use super::{Column, Dialect, RowsAffected, SqlStore, sql};
use crate::convert::*;
use crate::*;

#[async_trait]
impl<D: Dialect> Directory for SqlStore<D>
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
    #[instrument(skip_all, fields(domain = %name))]
    async fn add_domain(&self, name: &DomainName) -> Result<()> {
        let alias: Option<String> =
            sqlx::query_scalar("SELECT alias FROM domain_aliases WHERE alias = $1")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await?;
        if alias.is_some() {
            return Err(StoreError::Conflict(format!(
                "{name} is an alias; remove it first"
            )));
        }
        sqlx::query(sql::<D>(
            "INSERT INTO domains (name, created_at) VALUES ($1, {now})",
        ))
        .bind(name.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, format!("domain {name} already exists")))?;
        Ok(())
    }

    async fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        let rows = sqlx::query(sql::<D>(
            "SELECT d.name, d.quota_bytes, d.quota_messages, d.used_bytes, d.used_messages,
                    (SELECT count(*) FROM users u WHERE u.domain_id = d.id)
             FROM domains d ORDER BY d.name {bytewise}",
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DomainInfo {
                    name: DomainName::parse(r.try_get(0)?)?,
                    quota: quota(r.try_get(1)?, r.try_get(2)?),
                    usage: Usage {
                        bytes: to_u64(r.try_get(3)?),
                        messages: to_u64(r.try_get(4)?),
                    },
                    users: to_u64(r.try_get(5)?),
                })
            })
            .collect()
    }

    #[instrument(skip_all, fields(domain = %name))]
    async fn remove_domain(&self, name: &DomainName, force: bool) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        let domain = Self::domain_id(&mut tx, name).await?;
        let users: Vec<i64> = sqlx::query_scalar("SELECT id FROM users WHERE domain_id = $1")
            .bind(domain)
            .fetch_all(&mut *tx)
            .await?;
        if !users.is_empty() && !force {
            return Err(StoreError::Conflict(format!(
                "domain {name} still has {} user(s); remove them first or force",
                users.len()
            )));
        }
        for user in users {
            Self::remove_user_in(&mut tx, user).await?;
        }
        sqlx::query("DELETE FROM domains WHERE id = $1")
            .bind(domain)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_domain_quota(&self, name: &DomainName, change: QuotaChange) -> Result<()> {
        let (b, m) = quota_binds(change);
        let mut tx = D::begin_write(&self.pool).await?;
        let domain: Option<i64> = sqlx::query_scalar(
            "UPDATE domains SET quota_bytes = CASE WHEN $1 THEN $2 ELSE quota_bytes END,
                                quota_messages = CASE WHEN $3 THEN $4 ELSE quota_messages END
             WHERE name = $5 RETURNING id",
        )
        .bind(b.0)
        .bind(b.1)
        .bind(m.0)
        .bind(m.1)
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let domain = domain.ok_or_else(|| StoreError::NotFound(format!("domain {name}")))?;
        Self::check_quota_nesting(&mut tx, domain).await?;
        tx.commit().await?;
        Ok(())
    }

    #[instrument(skip_all, fields(user = %address))]
    async fn add_user(
        &self,
        address: &Address,
        password_hash: &str,
        scram: Option<&str>,
    ) -> Result<UserId> {
        let mut tx = D::begin_write(&self.pool).await?;
        let domain = Self::domain_with_room(&mut tx, &address.domain, 1).await?;
        let id: i64 = sqlx::query_scalar(sql::<D>(
            "INSERT INTO users (domain_id, localpart, password_hash, created_at, scram_verifier,
                                password_scheme)
             VALUES ($1, $2, $3, {now}, $4, $5) RETURNING id",
        ))
        .bind(domain)
        .bind(address.local.as_str())
        .bind(password_hash)
        .bind(scram.map(str::to_string))
        .bind(password_scheme(password_hash).map(str::to_string))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("user {address} already exists")))?;
        tx.commit().await?;
        Ok(UserId(id))
    }

    async fn list_users(&self, domain: &DomainName) -> Result<Vec<UserInfo>> {
        let mut tx = self.pool.begin().await?;
        let domain_id = Self::domain_id(&mut tx, domain).await?;
        let rows = sqlx::query(sql::<D>(
            "SELECT localpart, quota_bytes, quota_messages, used_bytes, used_messages
             FROM users WHERE domain_id = $1 ORDER BY localpart {bytewise}",
        ))
        .bind(domain_id)
        .fetch_all(&mut *tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UserInfo {
                    address: Address {
                        local: LocalPart::parse(r.try_get(0)?)?,
                        domain: domain.clone(),
                    },
                    quota: quota(r.try_get(1)?, r.try_get(2)?),
                    usage: Usage {
                        bytes: to_u64(r.try_get(3)?),
                        messages: to_u64(r.try_get(4)?),
                    },
                })
            })
            .collect()
    }

    #[instrument(skip_all, fields(user = %address))]
    async fn set_password(
        &self,
        address: &Address,
        password_hash: &str,
        scram: Option<&str>,
    ) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        let user = Self::user_id(&mut tx, address).await?;
        sqlx::query(
            "UPDATE users SET password_hash = $1, scram_verifier = $2, password_scheme = $3
             WHERE id = $4",
        )
        .bind(password_hash)
        .bind(scram.map(str::to_string))
        .bind(password_scheme(password_hash).map(str::to_string))
        .bind(user)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upgrade_password(
        &self,
        user: UserId,
        old_hash: &str,
        password_hash: &str,
        scram: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, scram_verifier = $2, password_scheme = $3
             WHERE id = $4 AND password_hash = $5",
        )
        .bind(password_hash)
        .bind(scram)
        .bind(password_scheme(password_hash).map(str::to_string))
        .bind(user.0)
        .bind(old_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    #[instrument(skip_all, fields(user = %address))]
    async fn remove_user(&self, address: &Address) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        let user = Self::user_id(&mut tx, address).await?;
        Self::remove_user_in(&mut tx, user).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_user_quota(&self, address: &Address, change: QuotaChange) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        // The domain row first, as deliveries lock it (no wait cycle), and so a concurrent
        // change of the domain's quota and this one see each other in the nesting check.
        let domain = Self::domain_id(&mut tx, &address.domain).await?;
        Self::lock_rows(&mut tx, domain, &[]).await?;
        let user = Self::user_id(&mut tx, address).await?;
        let (b, m) = quota_binds(change);
        sqlx::query(
            "UPDATE users SET quota_bytes = CASE WHEN $1 THEN $2 ELSE quota_bytes END,
                              quota_messages = CASE WHEN $3 THEN $4 ELSE quota_messages END
             WHERE id = $5",
        )
        .bind(b.0)
        .bind(b.1)
        .bind(m.0)
        .bind(m.1)
        .bind(user)
        .execute(&mut *tx)
        .await?;
        Self::check_quota_nesting(&mut tx, domain).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_user(&self, address: &Address) -> Result<Option<UserAuth>> {
        let row = sqlx::query(
            "SELECT u.id, u.password_hash, u.scram_verifier,
                    d.migrate_from IS NULL OR u.migrated_at IS NOT NULL, d.app_passwords_only
             FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE d.name = $1 AND u.localpart = $2 AND u.enabled AND d.enabled",
        )
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(UserAuth {
                id: UserId(r.try_get(0)?),
                password_hash: r.try_get(1)?,
                scram: r.try_get(2)?,
                migrated: r.try_get(3)?,
                app_passwords_only: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn domain_policy(&self, name: &DomainName) -> Result<Option<DomainPolicy>> {
        let row = sqlx::query(
            "SELECT d.name, d.login_forms, d.migrate_from FROM domains d WHERE d.name = $1
             UNION ALL
             SELECT d.name, d.login_forms, d.migrate_from
             FROM domain_aliases a JOIN domains d ON d.id = a.domain_id
             WHERE a.alias = $1",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(DomainPolicy {
                name: DomainName::parse(r.try_get(0)?)?,
                login_forms: LoginForms::parse(r.try_get(1)?)?,
                migrate_from: r.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn set_migrate_from(&self, domain: &DomainName, source: Option<&str>) -> Result<()> {
        let updated = sqlx::query("UPDATE domains SET migrate_from = $1 WHERE name = $2")
            .bind(source.map(str::to_string))
            .bind(domain.as_str())
            .execute(&self.pool)
            .await?;
        found(updated.rows_affected(), || format!("domain {domain}"))
    }

    async fn finish_migration(&self, user: UserId) -> Result<()> {
        sqlx::query(sql::<D>(
            "UPDATE users SET migrated_at = {now} WHERE id = $1 AND migrated_at IS NULL",
        ))
        .bind(user.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_login_forms(&self, domain: &DomainName, forms: LoginForms) -> Result<()> {
        let updated = sqlx::query("UPDATE domains SET login_forms = $1 WHERE name = $2")
            .bind(forms.to_string())
            .bind(domain.as_str())
            .execute(&self.pool)
            .await?;
        found(updated.rows_affected(), || format!("domain {domain}"))
    }

    async fn set_apop_secret(&self, address: &Address, secret: Option<String>) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        let user = Self::user_id(&mut tx, address).await?;
        sqlx::query("UPDATE users SET apop_secret = $1 WHERE id = $2")
            .bind(secret)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_allow_apop(&self, domain: &DomainName, allow: bool) -> Result<()> {
        let updated = sqlx::query("UPDATE domains SET allow_apop = $1 WHERE name = $2")
            .bind(allow)
            .bind(domain.as_str())
            .execute(&self.pool)
            .await?;
        found(updated.rows_affected(), || format!("domain {domain}"))
    }

    async fn find_apop_user(&self, address: &Address) -> Result<Option<ApopUser>> {
        let row = sqlx::query(
            // An APOP secret is a second main password: a domain that requires app passwords
            // refuses it too.
            "SELECT u.id, u.apop_secret, d.allow_apop AND NOT d.app_passwords_only
             FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE d.name = $1 AND u.localpart = $2 AND u.enabled AND d.enabled",
        )
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ApopUser {
                id: UserId(r.try_get(0)?),
                secret: r.try_get(1)?,
                domain_allows: r.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn add_alias(&self, alias: &DomainName, domain: &DomainName) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        let target = Self::domain_id(&mut tx, domain).await?;
        let clash: Option<i64> = sqlx::query_scalar("SELECT id FROM domains WHERE name = $1")
            .bind(alias.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if clash.is_some() {
            return Err(StoreError::Conflict(format!(
                "{alias} is a domain; an alias needs a name of its own"
            )));
        }
        sqlx::query(sql::<D>(
            "INSERT INTO domain_aliases (alias, domain_id, created_at) VALUES ($1, $2, {now})",
        ))
        .bind(alias.as_str())
        .bind(target)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("alias {alias} already exists")))?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_alias(&self, alias: &DomainName) -> Result<()> {
        let removed = sqlx::query("DELETE FROM domain_aliases WHERE alias = $1")
            .bind(alias.as_str())
            .execute(&self.pool)
            .await?;
        found(removed.rows_affected(), || format!("alias {alias}"))
    }

    async fn list_aliases(&self) -> Result<Vec<(DomainName, DomainName)>> {
        let rows = sqlx::query(sql::<D>(
            "SELECT a.alias, d.name FROM domain_aliases a JOIN domains d ON d.id = a.domain_id
             ORDER BY a.alias {bytewise}",
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    DomainName::parse(r.try_get(0)?)?,
                    DomainName::parse(r.try_get(1)?)?,
                ))
            })
            .collect()
    }

    async fn count_auth_attempt(
        &self,
        keys: &[String],
        window: Duration,
    ) -> Result<(AuthAttempt, Vec<u64>)> {
        let attempt = AuthAttempt {
            keys: keys.to_vec(),
            id: rand::random(),
            at: now_ms(),
        };
        if keys.is_empty() {
            return Ok((attempt, Vec::new()));
        }
        let counts = D::count_auth_attempt(self, &attempt, window).await?;
        Ok((attempt, counts))
    }

    async fn forget_auth_attempt(&self, attempt: &AuthAttempt, clear: &[String]) -> Result<()> {
        sqlx::query(sql::<D>(
            "DELETE FROM auth_failures
             WHERE (key IN (SELECT {each}($1)) AND at = $2 AND attempt = $3)
                OR key IN (SELECT {each}($4))",
        ))
        .bind(D::names(attempt.keys.iter().map(String::as_str)))
        .bind(attempt.at)
        .bind(attempt.id)
        .bind(D::names(clear.iter().map(String::as_str)))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_failed_login(&self, failure: &FailedLogin) -> Result<()> {
        self.record_failed(failure).await
    }
}

/// A unique-key violation as `Conflict` with `message`; other errors as they are.
pub(super) fn conflict(e: sqlx::Error, message: String) -> StoreError {
    match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict(message),
        other => other,
    }
}

/// `NotFound(what)` when a statement that names one row changed none.
pub(super) fn found(rows: u64, what: impl FnOnce() -> String) -> Result<()> {
    if rows == 0 {
        return Err(StoreError::NotFound(what()));
    }
    Ok(())
}

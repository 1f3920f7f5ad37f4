//! `Policies`: quotas' warnings, retention, LOGIN-DELAY, and imports.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};
use tracing::instrument;

use super::directory::found;
use super::{Column, Dialect, RowsAffected, SqlStore};
use crate::*;

/// A policy column (INT, NULL for none) as the model holds it.
fn setting<T: TryFrom<i64>>(v: Option<i64>) -> Option<T> {
    v.and_then(|v| T::try_from(v).ok())
}

/// A policy setting as its INT column takes it.
fn column(v: Option<u32>) -> Option<i64> {
    v.map(|v| i64::from(v.min(i32::MAX as u32)))
}

#[async_trait]
impl<D: Dialect> Policies for SqlStore<D>
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
    async fn domain_policies(&self, domain: &DomainName) -> Result<DomainPolicies> {
        let row = sqlx::query(
            "SELECT quota_tempfail, CAST(quota_warn_percent AS BIGINT),
                    CAST(retention_days AS BIGINT), CAST(login_delay_secs AS BIGINT)
             FROM domains WHERE name = $1",
        )
        .bind(domain.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("domain {domain}")))?;
        Ok(DomainPolicies {
            quota_tempfail: row.try_get(0)?,
            quota_warn_percent: setting(row.try_get(1)?),
            retention_days: setting(row.try_get(2)?),
            login_delay_secs: setting(row.try_get(3)?),
        })
    }

    #[instrument(skip_all, fields(domain = %domain))]
    async fn set_domain_policies(&self, domain: &DomainName, p: &DomainPolicies) -> Result<()> {
        p.validate()?;
        let updated = sqlx::query(
            "UPDATE domains SET quota_tempfail = $1, quota_warn_percent = $2, retention_days = $3,
                                login_delay_secs = $4
             WHERE name = $5",
        )
        .bind(p.quota_tempfail)
        .bind(p.quota_warn_percent.map(i64::from))
        .bind(column(p.retention_days))
        .bind(column(p.login_delay_secs))
        .bind(domain.as_str())
        .execute(&self.pool)
        .await?;
        found(updated.rows_affected(), || format!("domain {domain}"))
    }

    async fn user_policy(&self, user: UserId) -> Result<UserPolicy> {
        let row = sqlx::query(
            "SELECT CAST(d.retention_days AS BIGINT), CAST(d.login_delay_secs AS BIGINT) FROM users u
             JOIN domains d ON d.id = u.domain_id WHERE u.id = $1",
        )
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound("user".into()))?;
        Ok(UserPolicy {
            retention_days: setting(row.try_get(0)?),
            login_delay_secs: setting(row.try_get(1)?),
        })
    }

    async fn policy_summary(&self) -> Result<PolicySummary> {
        // How many different values (NULL counting as one) each has: more than one means CAPA
        // must say `USER`.
        let row = sqlx::query(
            "SELECT CAST(min(retention_days) AS BIGINT),
                    count(DISTINCT coalesce(retention_days, -1)),
                    CAST(min(login_delay_secs) AS BIGINT),
                    count(DISTINCT coalesce(login_delay_secs, -1))
             FROM domains",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(PolicySummary {
            min_retention_days: setting(row.try_get(0)?),
            retention_varies: row.try_get::<i64, _>(1)? > 1,
            min_login_delay_secs: setting(row.try_get(2)?),
            login_delay_varies: row.try_get::<i64, _>(3)? > 1,
        })
    }

    #[instrument(skip_all)]
    async fn expire(&self, now: i64, batch: u32) -> Result<ExpireReport> {
        D::expire(self, now, batch.max(1)).await
    }

    #[instrument(skip_all, fields(user = user.0, messages = messages.len()))]
    async fn import(&self, user: UserId, messages: &[ImportMessage]) -> Result<Vec<ImportOutcome>> {
        let mut tx = D::begin_write(&self.pool).await?;
        let prefix = Self::prefix(&self.uid_prefix, &mut tx).await?;
        // Domain then user, as deliveries lock them: usage counters stay exact, and two imports
        // into one mailbox run one after the other.
        let domain: Option<i64> = sqlx::query_scalar("SELECT domain_id FROM users WHERE id = $1")
            .bind(user.0)
            .fetch_optional(&mut *tx)
            .await?;
        let domain = domain.ok_or_else(|| StoreError::NotFound("user".into()))?;
        Self::lock_rows(&mut tx, domain, &[user.0]).await?;
        let mut outcomes = Vec::with_capacity(messages.len());
        for m in messages {
            let seen: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM messages WHERE user_id = $1 AND import_key = $2",
            )
            .bind(user.0)
            .bind(&m.key)
            .fetch_optional(&mut *tx)
            .await?;
            if seen.is_some() {
                outcomes.push(ImportOutcome::Present);
                continue;
            }
            let mut problem = None;
            if let Some(uid) = &m.uid {
                problem = uid_problem(uid);
                if problem.is_none() {
                    let taken: Option<i64> = sqlx::query_scalar(
                        "SELECT id FROM messages WHERE user_id = $1 AND uid = $2",
                    )
                    .bind(user.0)
                    .bind(uid)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if taken.is_some() {
                        problem = Some("is already used by another message of this mailbox".into());
                    }
                }
            }
            let outcome = match (&m.uid, problem) {
                (Some(uid), None) => {
                    // Keep the counter past an id of our own form, so new mail never collides.
                    if let Some(n) = own_uid_number(uid, &prefix) {
                        sqlx::query(D::RAISE_UID).bind(n).execute(&mut *tx).await?;
                    }
                    ImportOutcome::Added { uid: uid.clone() }
                }
                (Some(old), Some(reason)) => ImportOutcome::Renumbered {
                    old: old.clone(),
                    uid: Self::next_uid(&mut tx, &prefix).await?,
                    reason,
                },
                (None, _) => ImportOutcome::Added {
                    uid: Self::next_uid(&mut tx, &prefix).await?,
                },
            };
            let uid = match &outcome {
                ImportOutcome::Added { uid } | ImportOutcome::Renumbered { uid, .. } => uid,
                ImportOutcome::Present => continue,
            };
            Self::insert_whole_message(&mut tx, user.0, uid, &m.data, Some(&m.key)).await?;
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

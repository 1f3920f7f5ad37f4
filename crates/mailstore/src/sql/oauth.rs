//! OAuth settings per domain (see `crate::oauth`): one row per domain that has them, gone with
//! the domain (foreign key `ON DELETE CASCADE`).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};

use super::{Column, Dialect, RowsAffected, SqlStore, sql};
use crate::oauth::*;
use crate::*;

#[async_trait]
impl<D: Dialect> OAuthSettings for SqlStore<D>
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
    async fn oauth_settings(&self, domain: &DomainName) -> Result<Option<OAuthConfig>> {
        type Row = (
            String,
            Option<String>,
            Option<String>,
            String,
            String,
            String,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT o.issuer, o.jwks_url, o.jwks_file, o.audience, o.claim, o.algorithms
             FROM domain_oauth o JOIN domains d ON d.id = o.domain_id WHERE d.name = $1",
        )
        .bind(domain.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some((issuer, url, file, audience, claim, algorithms)) = row else {
            return Ok(None);
        };
        let jwks = match (url, file) {
            (Some(url), _) => JwksSource::Url(url),
            (None, Some(file)) => JwksSource::File(file),
            (None, None) => {
                return Err(StoreError::Invalid("OAuth settings without a JWKS".into()));
            }
        };
        let algorithms = JwtAlgorithm::parse_list(&algorithms).map_err(StoreError::Invalid)?;
        Ok(Some(OAuthConfig {
            issuer,
            jwks,
            audience,
            claim,
            algorithms,
        }))
    }

    async fn set_oauth_settings(&self, domain: &DomainName, config: &OAuthConfig) -> Result<()> {
        if config.algorithms.is_empty() {
            return Err(StoreError::Invalid("no signature algorithm allowed".into()));
        }
        let (url, file) = match &config.jwks {
            JwksSource::Url(url) => (Some(url.clone()), None),
            JwksSource::File(file) => (None, Some(file.clone())),
        };
        let mut tx = D::begin_write(&self.pool).await?;
        let id = Self::domain_id(&mut tx, domain).await?;
        sqlx::query(sql::<D>(
            "INSERT INTO domain_oauth
                 (domain_id, issuer, jwks_url, jwks_file, audience, claim, algorithms, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, {now_ms})
             ON CONFLICT (domain_id) DO UPDATE SET
                 issuer = excluded.issuer, jwks_url = excluded.jwks_url,
                 jwks_file = excluded.jwks_file, audience = excluded.audience,
                 claim = excluded.claim, algorithms = excluded.algorithms,
                 updated_at = excluded.updated_at",
        ))
        .bind(id)
        .bind(config.issuer.as_str())
        .bind(url)
        .bind(file)
        .bind(config.audience.as_str())
        .bind(config.claim.as_str())
        .bind(JwtAlgorithm::join(&config.algorithms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn clear_oauth_settings(&self, domain: &DomainName) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM domain_oauth
             WHERE domain_id = (SELECT id FROM domains WHERE name = $1)",
        )
        .bind(domain.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn oauth_anywhere(&self) -> Result<bool> {
        let one: Option<i64> = sqlx::query_scalar("SELECT domain_id FROM domain_oauth LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(one.is_some())
    }
}

//! `Admin`: what the admin UI and API need beyond `Directory`.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, Row, Type};
use tracing::instrument;

use super::directory::{conflict, found};
use super::{Column, Dialect, RowsAffected, SqlStore, scope_binds, sql};
use crate::convert::*;
use crate::*;

/// The columns `domain_row` reads, from `domains d`; the aliases as one comma-separated text.
const DOMAIN_COLUMNS: &str = "d.name, d.quota_bytes, d.quota_messages, d.used_bytes,
    d.used_messages, (SELECT count(*) FROM users u WHERE u.domain_id = d.id), d.max_users,
    d.login_forms, d.allow_apop, d.enabled,
    (SELECT {concat}(a.alias, ',') FROM domain_aliases a WHERE a.domain_id = d.id),
    d.migrate_from,
    (SELECT count(*) FROM users u WHERE u.domain_id = d.id AND u.migrated_at IS NOT NULL),
    CAST(d.bin_days AS BIGINT), d.bin_counts_quota, d.self_service, d.app_passwords_only";

fn domain_row<R: Row>(r: &R) -> Result<DomainDetail>
where
    usize: ColumnIndex<R>,
    i64: Column<R::Database>,
    bool: Column<R::Database>,
    String: Column<R::Database>,
    Option<i64>: Column<R::Database>,
    Option<String>: Column<R::Database>,
{
    Ok(DomainDetail {
        name: DomainName::parse(&r.try_get::<String, _>(0)?)?,
        quota: quota(r.try_get(1)?, r.try_get(2)?),
        usage: Usage {
            bytes: to_u64(r.try_get(3)?),
            messages: to_u64(r.try_get(4)?),
        },
        users: to_u64(r.try_get(5)?),
        max_users: r.try_get::<Option<i64>, _>(6)?.map(to_u64),
        login_forms: LoginForms::parse(&r.try_get::<String, _>(7)?)?,
        allow_apop: r.try_get(8)?,
        enabled: r.try_get(9)?,
        aliases: domain_list(r.try_get(10)?)?,
        migrate_from: r.try_get(11)?,
        migrated_users: to_u64(r.try_get(12)?),
        bin: BinSettings {
            days: u32::try_from(r.try_get::<i64, _>(13)?).unwrap_or(0),
            counts_quota: r.try_get(14)?,
        },
        self_service: r.try_get(15)?,
        app_passwords_only: r.try_get(16)?,
    })
}

/// An admin with their domains, as `admin_row` reads them.
const ADMIN_COLUMNS: &str = "SELECT a.id, a.email, a.password_hash, a.is_super,
    (SELECT {concat}(d.name, ',') FROM admin_domains ad JOIN domains d ON d.id = ad.domain_id
     WHERE ad.admin_id = a.id),
    a.disabled, a.last_signin_at, a.last_signin_ip,
    (SELECT count(*) FROM api_tokens t WHERE t.admin_id = a.id)
    FROM admins a";

fn admin_row<R: Row>(r: &R) -> Result<AdminAccount>
where
    usize: ColumnIndex<R>,
    i64: Column<R::Database>,
    bool: Column<R::Database>,
    String: Column<R::Database>,
    Option<String>: Column<R::Database>,
    Option<i64>: Column<R::Database>,
{
    Ok(AdminAccount {
        id: AdminId(r.try_get(0)?),
        email: r.try_get(1)?,
        password_hash: r.try_get(2)?,
        scope: match r.try_get(3)? {
            true => Scope::All,
            false => Scope::Domains(domain_list(r.try_get(4)?)?),
        },
        disabled: r.try_get(5)?,
        last_signin_at: r.try_get(6)?,
        last_signin_ip: r.try_get(7)?,
    })
}

/// Domain names aggregated with `{concat}`, in byte order.
fn domain_list(names: Option<String>) -> Result<Vec<DomainName>> {
    let mut names = names
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|a| !a.is_empty())
        .map(DomainName::parse)
        .collect::<Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// The columns `user_row` reads, from `users u`, the creation time in Unix ms last.
const USER_COLUMNS: &str = "u.localpart, u.quota_bytes, u.quota_messages, u.used_bytes,
    u.used_messages, u.enabled, u.password_scheme, ";

fn user_row<R: Row>(r: &R, domain: &DomainName) -> Result<UserDetail>
where
    usize: ColumnIndex<R>,
    i64: Column<R::Database>,
    bool: Column<R::Database>,
    String: Column<R::Database>,
    Option<String>: Column<R::Database>,
{
    Ok(UserDetail {
        address: Address {
            local: LocalPart::parse(&r.try_get::<String, _>(0)?)?,
            domain: domain.clone(),
        },
        quota: quota(r.try_get(1)?, r.try_get(2)?),
        usage: Usage {
            bytes: to_u64(r.try_get(3)?),
            messages: to_u64(r.try_get(4)?),
        },
        enabled: r.try_get(5)?,
        password_scheme: r.try_get(6)?,
        created_at: r.try_get(7)?,
    })
}

/// `SELECT` of the `USER_COLUMNS` followed by `rest`.
fn select_users<D: Dialect>(rest: &str) -> AssertSqlSafe<String> {
    sql::<D>(&format!(
        "SELECT {USER_COLUMNS}{} FROM users u {rest}",
        D::millis("u.created_at")
    ))
}

/// `SELECT` of the `DOMAIN_COLUMNS` followed by `rest`.
fn select_domains<D: Dialect>(rest: &str) -> AssertSqlSafe<String> {
    sql::<D>(&format!("SELECT {DOMAIN_COLUMNS} FROM domains d {rest}"))
}

#[async_trait]
impl<D: Dialect> Admin for SqlStore<D>
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
    #[instrument(skip_all, fields(admin = %email))]
    async fn add_admin(&self, email: &str, password_hash: &str, scope: &Scope) -> Result<AdminId> {
        let mut tx = D::begin_write(&self.pool).await?;
        let id: i64 = sqlx::query_scalar(sql::<D>(
            "INSERT INTO admins (email, password_hash, is_super, created_at)
             VALUES ($1, $2, $3, {now_ms}) RETURNING id",
        ))
        .bind(email)
        .bind(password_hash)
        .bind(scope.is_all())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("admin {email} already exists")))?;
        if let Scope::Domains(list) = scope {
            for name in list {
                let domain = Self::domain_id(&mut tx, name).await?;
                sqlx::query(
                    "INSERT INTO admin_domains (admin_id, domain_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(domain)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(AdminId(id))
    }

    async fn find_admin(&self, email: &str) -> Result<Option<AdminAccount>> {
        let row = sqlx::query(sql::<D>(&format!("{ADMIN_COLUMNS} WHERE a.email = $1")))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(admin_row).transpose()
    }

    async fn admin_by_id(&self, id: AdminId) -> Result<Option<AdminAccount>> {
        let row = sqlx::query(sql::<D>(&format!("{ADMIN_COLUMNS} WHERE a.id = $1")))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(admin_row).transpose()
    }

    async fn count_admins(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM admins")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(n))
    }

    #[instrument(skip_all, fields(admin = admin.0))]
    async fn create_admin_session(
        &self,
        id_hash: &str,
        admin: AdminId,
        csrf: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO admin_sessions (id_hash, admin_id, csrf, created_at, last_seen)
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(id_hash)
        .bind(admin.0)
        .bind(csrf)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn admin_session(&self, id_hash: &str) -> Result<Option<AdminSession>> {
        let row = sqlx::query(
            "SELECT admin_id, csrf, created_at, last_seen FROM admin_sessions WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(AdminSession {
                admin: AdminId(r.try_get(0)?),
                csrf: r.try_get(1)?,
                created_at: r.try_get(2)?,
                last_seen: r.try_get(3)?,
            })
        })
        .transpose()
    }

    async fn touch_admin_session(&self, id_hash: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE admin_sessions SET last_seen = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn delete_admin_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn prune_admin_sessions(&self, idle_before: i64, created_before: i64) -> Result<()> {
        sqlx::query("DELETE FROM admin_sessions WHERE last_seen < $1 OR created_at < $2")
            .bind(idle_before)
            .bind(created_before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[instrument(skip_all, fields(admin = admin.0))]
    async fn add_api_token(
        &self,
        admin: AdminId,
        name: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO api_tokens (admin_id, name, token_hash, created_at)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(admin.0)
        .bind(name)
        .bind(token_hash)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn use_api_token(&self, token_hash: &str, now: i64) -> Result<Option<TokenHolder>> {
        // An expired token or one of a disabled admin is not even marked used: it did nothing.
        let row = sqlx::query(
            "UPDATE api_tokens SET last_used = $1
             WHERE token_hash = $2 AND (expires_at IS NULL OR expires_at > $1)
               AND admin_id IN (SELECT id FROM admins WHERE NOT disabled)
             RETURNING admin_id, read_only",
        )
        .bind(now)
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(TokenHolder {
                admin: AdminId(r.try_get(0)?),
                read_only: r.try_get(1)?,
            })
        })
        .transpose()
    }

    async fn list_api_tokens(&self, admin: AdminId) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, last_used, expires_at, read_only FROM api_tokens
             WHERE admin_id = $1 ORDER BY id",
        )
        .bind(admin.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiToken {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                    last_used: r.try_get(3)?,
                    expires_at: r.try_get(4)?,
                    read_only: r.try_get(5)?,
                })
            })
            .collect()
    }

    #[instrument(skip_all, fields(admin = admin.0, token = id))]
    async fn revoke_api_token(&self, admin: AdminId, id: i64) -> Result<()> {
        let removed = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND admin_id = $2")
            .bind(id)
            .bind(admin.0)
            .execute(&self.pool)
            .await?;
        found(removed.rows_affected(), || format!("API token {id}"))
    }

    async fn domain_page(
        &self,
        scope: &Scope,
        search: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<DomainDetail>> {
        let (all, list) = scope_binds::<D>(scope);
        let filter = "WHERE ($1 OR d.name IN (SELECT {each}($2)))
                      AND {find}(lower(d.name), lower($3)) > 0";
        let mut tx = self.pool.begin().await?;
        let total: i64 = sqlx::query_scalar(sql::<D>(&format!(
            "SELECT count(*) FROM domains d {filter}"
        )))
        .bind(all)
        .bind(&list)
        .bind(search)
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query(select_domains::<D>(&format!(
            "{filter} ORDER BY d.name {{bytewise}} LIMIT $4 OFFSET $5"
        )))
        .bind(all)
        .bind(&list)
        .bind(search)
        .bind(to_i64(limit))
        .bind(to_i64(offset))
        .fetch_all(&mut *tx)
        .await?;
        Ok(Page {
            items: rows.iter().map(domain_row).collect::<Result<_>>()?,
            total: to_u64(total),
        })
    }

    async fn domain_detail(&self, name: &DomainName) -> Result<Option<DomainDetail>> {
        let row = sqlx::query(select_domains::<D>("WHERE d.name = $1"))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(domain_row).transpose()
    }

    #[instrument(skip_all, fields(domain = %name))]
    async fn update_domain(&self, name: &DomainName, settings: &DomainSettings) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        let domain: Option<i64> = sqlx::query_scalar(
            "UPDATE domains SET quota_bytes = $1, quota_messages = $2, max_users = $3,
                                login_forms = $4, enabled = $5
             WHERE name = $6 RETURNING id",
        )
        .bind(settings.quota.bytes.map(to_i64))
        .bind(settings.quota.messages.map(to_i64))
        .bind(settings.max_users.map(to_i64))
        .bind(settings.login_forms.to_string())
        .bind(settings.enabled)
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let domain = domain.ok_or_else(|| StoreError::NotFound(format!("domain {name}")))?;
        Self::check_quota_nesting(&mut tx, domain).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user_page(
        &self,
        domain: &DomainName,
        search: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<UserDetail>> {
        let mut tx = self.pool.begin().await?;
        let domain_id = Self::domain_id(&mut tx, domain).await?;
        // An empty search filters nothing, and its count and page read only the domain's part of
        // the `(domain_id, localpart)` index. A search reads that part too, testing each local
        // part, never the table; local parts are stored in lower case (`LocalPart::parse`), so
        // only the term is lowered (`lower()` of 100,000 local parts took ~45 ms on Postgres).
        // The page's local parts are found in the index first (an `OFFSET` of 100,000 index
        // entries costs a few ms; of table rows, tens), then only those rows are read.
        // In NFC as well, as `LocalPart::parse` stores them: a decomposed `ö` finds `jöhn`.
        let search = unicode_normalization::UnicodeNormalization::nfc(search)
            .collect::<String>()
            .to_lowercase();
        let search = search.as_str();
        // The search term is bound as $2 when there is one, the page's bounds after it.
        let (filter, limit_at, offset_at) = if search.is_empty() {
            ("", "$2", "$3")
        } else {
            ("AND {find}(p.localpart, $2) > 0", "$3", "$4")
        };
        let total: i64 = {
            let count = sql::<D>(&format!(
                "SELECT count(*) FROM users p WHERE p.domain_id = $1 {filter}"
            ));
            let q = sqlx::query_scalar(count).bind(domain_id);
            let q = if search.is_empty() { q } else { q.bind(search) };
            q.fetch_one(&mut *tx).await?
        };
        let rows = {
            let select = select_users::<D>(&format!(
                "WHERE u.domain_id = $1 AND u.localpart IN
                     (SELECT p.localpart FROM users p WHERE p.domain_id = $1 {filter}
                      ORDER BY p.localpart {{bytewise}} LIMIT {limit_at} OFFSET {offset_at})
                 ORDER BY u.localpart {{bytewise}}"
            ));
            let q = sqlx::query(select).bind(domain_id);
            let q = if search.is_empty() { q } else { q.bind(search) };
            q.bind(to_i64(limit))
                .bind(to_i64(offset))
                .fetch_all(&mut *tx)
                .await?
        };
        Ok(Page {
            items: rows
                .iter()
                .map(|r| user_row(r, domain))
                .collect::<Result<_>>()?,
            total: to_u64(total),
        })
    }

    async fn user_detail(&self, address: &Address) -> Result<Option<UserDetail>> {
        let row = sqlx::query(select_users::<D>(
            "JOIN domains d ON d.id = u.domain_id WHERE d.name = $1 AND u.localpart = $2",
        ))
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_row(&r, &address.domain)).transpose()
    }

    #[instrument(skip_all, fields(user = %address, enabled))]
    async fn set_user_enabled(&self, address: &Address, enabled: bool) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        let user = Self::user_id(&mut tx, address).await?;
        sqlx::query("UPDATE users SET enabled = $1 WHERE id = $2")
            .bind(enabled)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn live_sessions(&self, scope: &Scope) -> Result<Vec<LiveSession>> {
        let (all, list) = scope_binds::<D>(scope);
        let rows = sqlx::query(sql::<D>(&format!(
            "SELECT u.localpart, d.name, l.node, {locked}, e.ip, e.tls
             FROM maildrop_locks l JOIN users u ON u.id = l.user_id
                  JOIN domains d ON d.id = u.domain_id
                  LEFT JOIN login_events e
                      ON e.user_id = l.user_id AND e.at = {locked} AND e.token = l.token
             WHERE l.expires_at > {} AND ($1 OR d.name IN (SELECT {{each}}($2)))
             ORDER BY d.name {{bytewise}}, u.localpart {{bytewise}}",
            D::after("$3"),
            // The login wrote its event with the lock's own time and token (see the dialects'
            // `lock`): an index lookup, not a scan of the user's history.
            locked = D::millis("l.locked_at"),
        )))
        .bind(all)
        .bind(list)
        .bind(self.clock.offset_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LiveSession {
                    address: Address {
                        local: LocalPart::parse(r.try_get(0)?)?,
                        domain: DomainName::parse(r.try_get(1)?)?,
                    },
                    node: r.try_get(2)?,
                    since: r.try_get(3)?,
                    client: r.try_get(4)?,
                    tls: r.try_get(5)?,
                })
            })
            .collect()
    }

    #[instrument(skip_all, fields(user = %address))]
    async fn break_lock(&self, address: &Address) -> Result<bool> {
        let removed = sqlx::query(
            "DELETE FROM maildrop_locks WHERE user_id =
                 (SELECT u.id FROM users u JOIN domains d ON d.id = u.domain_id
                  WHERE d.name = $1 AND u.localpart = $2)",
        )
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .execute(&self.pool)
        .await?;
        Ok(removed.rows_affected() > 0)
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<()> {
        sqlx::query(sql::<D>(
            "INSERT INTO audit_log (at, actor, action, object, domain, before, after, ip, success)
             VALUES ({now_ms}, $1, $2, $3, $4, $5, $6, $7, $8)",
        ))
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.object)
        .bind(entry.domain.as_ref().map(DomainName::to_string))
        .bind(&entry.before)
        .bind(&entry.after)
        .bind(&entry.ip)
        .bind(entry.success)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_page(
        &self,
        scope: &Scope,
        filter: &AuditFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<AuditEntry>> {
        let (all, list) = scope_binds::<D>(scope);
        // `domain IN (...)` is never true for a NULL domain: service-wide entries stay hidden
        // from domain admins.
        let cond = "($1 OR domain IN (SELECT {each}($2)))
                    AND {find}(lower(actor), lower($3)) > 0
                    AND {find}(lower(action), lower($4)) > 0
                    AND {find}(lower(object), lower($5)) > 0";
        let mut tx = self.pool.begin().await?;
        let total: i64 = sqlx::query_scalar(sql::<D>(&format!(
            "SELECT count(*) FROM audit_log WHERE {cond}"
        )))
        .bind(all)
        .bind(&list)
        .bind(&filter.actor)
        .bind(&filter.action)
        .bind(&filter.object)
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query(sql::<D>(&format!(
            "SELECT at, actor, action, object, domain, before, after, ip, success
             FROM audit_log WHERE {cond} ORDER BY id DESC LIMIT $6 OFFSET $7"
        )))
        .bind(all)
        .bind(&list)
        .bind(&filter.actor)
        .bind(&filter.action)
        .bind(&filter.object)
        .bind(to_i64(limit))
        .bind(to_i64(offset))
        .fetch_all(&mut *tx)
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get(0)?,
                    actor: r.try_get(1)?,
                    action: r.try_get(2)?,
                    object: r.try_get(3)?,
                    domain: r
                        .try_get::<Option<String>, _>(4)?
                        .as_deref()
                        .map(DomainName::parse)
                        .transpose()?,
                    before: r.try_get(5)?,
                    after: r.try_get(6)?,
                    ip: r.try_get(7)?,
                    success: r.try_get(8)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            total: to_u64(total),
        })
    }

    async fn hourly_stats(&self, scope: &Scope, since_hour: i64) -> Result<Vec<HourlyStat>> {
        let (all, list) = scope_binds::<D>(scope);
        let rows = sqlx::query(sql::<D>(
            "SELECT h.hour, CAST(sum(h.delivered) AS BIGINT), CAST(sum(h.logins) AS BIGINT)
             FROM hourly_stats h JOIN domains d ON d.id = h.domain_id
             WHERE h.hour >= $1 AND ($2 OR d.name IN (SELECT {each}($3)))
               AND (h.delivered > 0 OR h.logins > 0)
             GROUP BY h.hour ORDER BY h.hour",
        ))
        .bind(since_hour)
        .bind(all)
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HourlyStat {
                    hour: r.try_get(0)?,
                    delivered: to_u64(r.try_get(1)?),
                    logins: to_u64(r.try_get(2)?),
                })
            })
            .collect()
    }

    async fn legacy_schemes(&self, scope: &Scope) -> Result<Vec<(String, u64)>> {
        let (all, list) = scope_binds::<D>(scope);
        let rows = sqlx::query(sql::<D>(
            "SELECT u.password_scheme, count(*) FROM users u
             WHERE u.password_scheme IS NOT NULL
               AND ($1 OR u.domain_id IN (SELECT id FROM domains WHERE name IN (SELECT {each}($2))))
             GROUP BY u.password_scheme ORDER BY u.password_scheme",
        ))
        .bind(all)
        .bind(&list)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, to_u64(r.try_get(1)?))))
            .collect()
    }

    async fn top_lists(&self, scope: &Scope, since_ms: i64, limit: u64) -> Result<TopLists> {
        let (all, list) = scope_binds::<D>(scope);
        let limit = to_i64(limit);
        let mut tx = self.pool.begin().await?;
        let named = |rows: Vec<D::Row>| -> Result<Vec<Ranked<DomainName>>> {
            rows.iter()
                .map(|r| {
                    Ok(Ranked {
                        name: DomainName::parse(&r.try_get::<String, _>(0)?)?,
                        value: to_u64(r.try_get(1)?),
                    })
                })
                .collect()
        };
        let domains_by_storage = named(
            sqlx::query(sql::<D>(
                "SELECT d.name, d.used_bytes FROM domains d
                 WHERE d.used_bytes > 0 AND ($1 OR d.name IN (SELECT {each}($2)))
                 ORDER BY d.used_bytes DESC, d.name {bytewise} LIMIT $3",
            ))
            .bind(all)
            .bind(&list)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?,
        )?;
        let domains_by_logins = named(
            sqlx::query(sql::<D>(
                "SELECT d.name, CAST(sum(h.logins) AS BIGINT) AS n
                 FROM hourly_stats h JOIN domains d ON d.id = h.domain_id
                 WHERE h.hour >= $1 AND ($2 OR d.name IN (SELECT {each}($3)))
                 GROUP BY d.name HAVING sum(h.logins) > 0
                 ORDER BY n DESC, d.name {bytewise} LIMIT $4",
            ))
            .bind(since_ms.div_euclid(3_600_000))
            .bind(all)
            .bind(&list)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?,
        )?;
        // A super admin's lists walk an index from the top and stop after `limit` rows; a
        // domain admin's walk each of their domains' part of one (a `$1 OR …` filter would
        // keep either plan from being chosen).
        let by_storage = sql::<D>(&format!(
            "SELECT u.localpart, d.name, u.used_bytes
             FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE u.used_bytes > 0 {}
             ORDER BY u.used_bytes DESC, u.id DESC LIMIT $1",
            if all {
                ""
            } else {
                "AND u.domain_id IN (SELECT id FROM domains WHERE name IN (SELECT {each}($2)))"
            }
        ));
        // Counting every login of a busy month would read millions of rows: the ranking counts
        // the range's most recent `LOGIN_SAMPLE` logins, read backwards from the
        // `(success, at, …)` index, and says how many it counted. Grouping by `user_id + 0` keeps
        // SQLite from walking every user's events in `(user_id, at)` order instead. Only the
        // top `limit` are joined to their names: Postgres would join all of them, then sort.
        let by_logins = sql::<D>(&format!(
            "SELECT u.localpart, d.name, t.n, t.total
             FROM (SELECT user_id + 0 AS user_id, count(*) AS n,
                          CAST(sum(count(*)) OVER () AS BIGINT) AS total
                   FROM (SELECT le.user_id FROM login_events le {}
                         WHERE le.success = TRUE AND le.at >= $2 AND le.user_id IS NOT NULL {}
                         ORDER BY le.at DESC LIMIT {LOGIN_SAMPLE}) recent
                   GROUP BY user_id + 0
                   ORDER BY n DESC, user_id LIMIT $1) t
                  JOIN users u ON u.id = t.user_id JOIN domains d ON d.id = u.domain_id
             ORDER BY t.n DESC, t.user_id",
            if all {
                ""
            } else {
                "JOIN users lu ON lu.id = le.user_id"
            },
            if all {
                ""
            } else {
                "AND lu.domain_id IN (SELECT id FROM domains WHERE name IN (SELECT {each}($3)))"
            }
        ));
        let user = |r: &D::Row| -> Result<Ranked<Address>> {
            Ok(Ranked {
                name: Address {
                    local: LocalPart::parse(&r.try_get::<String, _>(0)?)?,
                    domain: DomainName::parse(&r.try_get::<String, _>(1)?)?,
                },
                value: to_u64(r.try_get(2)?),
            })
        };
        let mut q = sqlx::query(by_storage).bind(limit);
        if !all {
            q = q.bind(&list);
        }
        let users_by_storage = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(user)
            .collect::<Result<Vec<_>>>()?;
        let mut q = sqlx::query(by_logins).bind(limit).bind(since_ms);
        if !all {
            q = q.bind(&list);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        let logins_counted = match rows.first() {
            Some(r) => to_u64(r.try_get(3)?),
            None => 0,
        };
        let users_by_logins = rows.iter().map(user).collect::<Result<Vec<_>>>()?;
        Ok(TopLists {
            domains_by_storage,
            domains_by_logins,
            users_by_storage,
            users_by_logins,
            logins_counted,
        })
    }

    async fn failed_logins(&self, scope: &Scope, since_hour: i64) -> Result<Vec<FailedLogins>> {
        let (all, list) = scope_binds::<D>(scope);
        // Per-hour counters written with each failure (`record_failed`, `record_refused`): a
        // range costs its hours, not its failures. Failures that named no known domain are
        // counted apart and shown to super admins only.
        let rows = sqlx::query(sql::<D>(
            "SELECT hour, CAST(sum(n) AS BIGINT) FROM (
                 SELECT h.hour, h.failed_logins AS n FROM hourly_stats h
                 WHERE h.hour >= $1 AND h.failed_logins > 0
                   AND ($2 OR h.domain_id IN (SELECT id FROM domains
                                              WHERE name IN (SELECT {each}($3))))
                 UNION ALL
                 SELECT f.hour, f.failed FROM hourly_failures f WHERE f.hour >= $1 AND $2
             ) t
             GROUP BY hour ORDER BY hour",
        ))
        .bind(since_hour)
        .bind(all)
        .bind(&list)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FailedLogins {
                    hour: r.try_get(0)?,
                    failed: to_u64(r.try_get(1)?),
                })
            })
            .collect()
    }

    async fn migration_counts(&self, scope: &Scope) -> Result<MigrationCounts> {
        let (all, list) = scope_binds::<D>(scope);
        let row = sqlx::query(sql::<D>(
            "SELECT (SELECT count(*) FROM domains d WHERE d.migrate_from IS NOT NULL
                        AND ($1 OR d.name IN (SELECT {each}($2)))),
                    count(u.migrated_at), count(*) - count(u.migrated_at)
             FROM users u
             WHERE u.domain_id IN (SELECT d.id FROM domains d WHERE d.migrate_from IS NOT NULL
                                   AND ($1 OR d.name IN (SELECT {each}($2))))",
        ))
        .bind(all)
        .bind(&list)
        .fetch_one(&self.pool)
        .await?;
        Ok(MigrationCounts {
            domains: to_u64(row.try_get(0)?),
            migrated: to_u64(row.try_get(1)?),
            to_go: to_u64(row.try_get(2)?),
        })
    }

    async fn totals(&self, scope: &Scope) -> Result<Totals> {
        let (all, list) = scope_binds::<D>(scope);
        let mut tx = self.pool.begin().await?;
        // Every user, for a super admin, is a count of an index; a `$1 OR …` filter would make
        // Postgres join every user row to the domains instead.
        let users = if all {
            "(SELECT count(*) FROM users)"
        } else {
            "(SELECT count(*) FROM users u WHERE u.domain_id IN
                  (SELECT id FROM domains WHERE name IN (SELECT {each}($2))))"
        };
        let row = sqlx::query(sql::<D>(&format!(
            "SELECT count(*), {users},
                    CAST(coalesce(sum(d.used_bytes), 0) AS BIGINT),
                    CAST(coalesce(sum(d.used_messages), 0) AS BIGINT),
                    CAST(coalesce(sum(d.quota_bytes), 0) AS BIGINT), count(d.quota_bytes)
             FROM domains d
             WHERE $1 OR d.name IN (SELECT {{each}}($2))"
        )))
        .bind(all)
        .bind(&list)
        .fetch_one(&mut *tx)
        .await?;
        let sessions: i64 = sqlx::query_scalar(sql::<D>(&format!(
            "SELECT count(*) FROM maildrop_locks l JOIN users u ON u.id = l.user_id
                  JOIN domains d ON d.id = u.domain_id
             WHERE l.expires_at > {} AND ($1 OR d.name IN (SELECT {{each}}($2)))",
            D::after("$3")
        )))
        .bind(all)
        .bind(&list)
        .bind(self.clock.offset_ms())
        .fetch_one(&mut *tx)
        .await?;
        let domains: i64 = row.try_get(0)?;
        let quota_sum: i64 = row.try_get(4)?;
        let limited: i64 = row.try_get(5)?;
        Ok(Totals {
            domains: to_u64(domains),
            users: to_u64(row.try_get(1)?),
            usage: Usage {
                bytes: to_u64(row.try_get(2)?),
                messages: to_u64(row.try_get(3)?),
            },
            // An unlimited domain makes the sum meaningless, and no domains has no quota.
            quota_bytes: (domains > 0 && limited == domains).then_some(to_u64(quota_sum)),
            sessions: to_u64(sessions),
        })
    }

    async fn list_admins(&self) -> Result<Vec<AdminListing>> {
        let rows = sqlx::query(sql::<D>(&format!(
            "{ADMIN_COLUMNS} ORDER BY a.email {{bytewise}}"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AdminListing {
                    account: admin_row(r)?,
                    tokens: to_u64(r.try_get(8)?),
                })
            })
            .collect()
    }

    #[instrument(skip_all, fields(admin = id.0))]
    async fn set_admin_scope(&self, id: AdminId, scope: &Scope) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        if !scope.is_all() {
            keeps_a_super_admin::<D>(&mut tx, id).await?;
        }
        let changed = sqlx::query("UPDATE admins SET is_super = $1 WHERE id = $2")
            .bind(scope.is_all())
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        found(changed.rows_affected(), || format!("admin {}", id.0))?;
        sqlx::query("DELETE FROM admin_domains WHERE admin_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        if let Scope::Domains(list) = scope {
            for name in list {
                let domain = Self::domain_id(&mut tx, name).await?;
                sqlx::query(
                    "INSERT INTO admin_domains (admin_id, domain_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                )
                .bind(id.0)
                .bind(domain)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    #[instrument(skip_all, fields(admin = id.0))]
    async fn set_admin_password(&self, id: AdminId, password_hash: &str) -> Result<()> {
        let changed = sqlx::query("UPDATE admins SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        found(changed.rows_affected(), || format!("admin {}", id.0))
    }

    #[instrument(skip_all, fields(admin = id.0, disabled))]
    async fn set_admin_disabled(&self, id: AdminId, disabled: bool) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        if disabled {
            keeps_a_super_admin::<D>(&mut tx, id).await?;
        }
        let changed = sqlx::query("UPDATE admins SET disabled = $1 WHERE id = $2")
            .bind(disabled)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        found(changed.rows_affected(), || format!("admin {}", id.0))?;
        tx.commit().await?;
        Ok(())
    }

    #[instrument(skip_all, fields(admin = id.0))]
    async fn remove_admin(&self, id: AdminId) -> Result<()> {
        let mut tx = D::begin_write(&self.pool).await?;
        keeps_a_super_admin::<D>(&mut tx, id).await?;
        // Sessions, tokens and domains go with the account (ON DELETE CASCADE).
        let removed = sqlx::query("DELETE FROM admins WHERE id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        found(removed.rows_affected(), || format!("admin {}", id.0))?;
        tx.commit().await?;
        Ok(())
    }

    #[instrument(skip_all, fields(admin = id.0))]
    async fn delete_admin_sessions(&self, id: AdminId) -> Result<u64> {
        let removed = sqlx::query("DELETE FROM admin_sessions WHERE admin_id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(removed.rows_affected())
    }

    #[instrument(skip_all, fields(admin = id.0))]
    async fn revoke_admin_tokens(&self, id: AdminId) -> Result<u64> {
        let removed = sqlx::query("DELETE FROM api_tokens WHERE admin_id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(removed.rows_affected())
    }

    #[instrument(skip_all, fields(admin = admin.0))]
    async fn create_api_token(
        &self,
        admin: AdminId,
        token: &NewApiToken<'_>,
        now: i64,
    ) -> Result<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO api_tokens (admin_id, name, token_hash, created_at, expires_at, read_only)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(admin.0)
        .bind(token.name)
        .bind(token.token_hash)
        .bind(now)
        .bind(token.expires_at)
        .bind(token.read_only)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn record_admin_signin(&self, id: AdminId, at: i64, ip: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE admins SET last_signin_at = $1, last_signin_ip = $2 WHERE id = $3")
            .bind(at)
            .bind(ip.map(str::to_string))
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn admin_signins(&self, email: &str, limit: u64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, object, ip, success FROM audit_log
             WHERE actor = $1 AND action = 'signin' ORDER BY id DESC LIMIT $2",
        )
        .bind(email)
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get(0)?,
                    actor: r.try_get(1)?,
                    action: r.try_get(2)?,
                    object: r.try_get(3)?,
                    domain: None,
                    before: None,
                    after: None,
                    ip: r.try_get(4)?,
                    success: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn search(&self, scope: &Scope, term: &SearchTerm, limit: u64) -> Result<SearchHits> {
        search::search(self, scope, term, limit).await
    }

    async fn user_activity(&self, address: &Address) -> Result<Option<UserActivity>> {
        self.activity_of(address).await
    }

    async fn prune_activity(&self, before_ms: i64) -> Result<u64> {
        self.prune_activity_before(before_ms).await
    }
}

/// Refuses (`Conflict`) a change that takes `id` out of the enabled super admins when it is the
/// last one: nobody could then manage admins or domains from the UI. The enabled super admins
/// are row-locked, so two such changes made at once see each other.
async fn keeps_a_super_admin<D: Dialect>(
    tx: &mut sqlx::Transaction<'_, D>,
    id: AdminId,
) -> Result<()>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    i64: Column<D>,
    String: Column<D>,
    usize: ColumnIndex<D::Row>,
{
    let rows = sqlx::query(sql::<D>(
        "SELECT id, email FROM admins WHERE is_super AND NOT disabled ORDER BY id {lock_rows}",
    ))
    .fetch_all(&mut **tx)
    .await?;
    let mut others = 0;
    let mut target = None;
    for r in &rows {
        if r.try_get::<i64, _>(0)? == id.0 {
            target = Some(r.try_get::<String, _>(1)?);
        } else {
            others += 1;
        }
    }
    match target {
        Some(email) if others == 0 => Err(StoreError::Conflict(format!(
            "{email} is the last enabled super admin: make another admin super admin first"
        ))),
        _ => Ok(()),
    }
}

/// `Admin::search`, in a file of its own.
mod search;

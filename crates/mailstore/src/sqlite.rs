//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`, so a committed
//! delivery or UPDATE survives a crash or power loss. Write transactions start with
//! `BEGIN IMMEDIATE`: they take the write lock up front instead of failing on upgrade.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};
use tracing::instrument;

use crate::batch::{ACCOUNT_COLUMNS, Accounts, Pending};
use crate::convert::*;
use crate::group::{BatchWriter, GroupCommit, Outcomes};
use crate::held::Held;
use crate::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    node: String,
    /// Distinguishes this run of the node from its crashed predecessors.
    incarnation: String,
    held: Held,
    /// The install's UID prefix (see the first migration).
    uid_prefix: std::sync::Arc<tokio::sync::OnceCell<String>>,
    ttl: Duration,
    deliveries: GroupCommit,
}

impl SqliteStore {
    /// The connection pool's size and idle connections now (for the metrics).
    pub fn pool_usage(&self) -> crate::PoolUsage {
        crate::PoolUsage {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
        }
    }

    /// Opens (creating if missing) the database file; `migrate` applies pending migrations.
    /// The file holds password hashes and SCRAM verifiers: a missing directory is created 0700
    /// and a missing file 0600 (SQLite gives its -wal and -shm files the file's mode).
    pub async fn open(path: &Path, lock: LockOptions, migrate: bool) -> Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    StoreError::Invalid(format!(
                        "cannot create data directory {}: {e}",
                        dir.display()
                    ))
                })?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StoreError::Invalid(format!(
                    "cannot create database {}: {e}",
                    path.display()
                )));
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        if migrate {
            MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| StoreError::Unavailable(e.into()))?;
        }
        let uid_prefix = std::sync::Arc::new(tokio::sync::OnceCell::new());
        Ok(Self {
            node: lock.node,
            incarnation: incarnation(),
            held: Held::default(),
            ttl: lock.ttl,
            deliveries: GroupCommit::start(Writer {
                pool: pool.clone(),
                uid_prefix: uid_prefix.clone(),
            }),
            pool,
            uid_prefix,
        })
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Deletes the lease's lock row; false when the lease was no longer held (expired and taken
    /// over, or broken by an admin).
    async fn release(&self, lease: &Lease) -> Result<bool> {
        let rows = sqlx::query("DELETE FROM maildrop_locks WHERE user_id = $1 AND token = $2")
            .bind(lease.user.0)
            .bind(lease.token)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(rows > 0)
    }

    async fn domain_id(tx: &mut Transaction<'_, Sqlite>, name: &DomainName) -> Result<i64> {
        sqlx::query_scalar("SELECT id FROM domains WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("domain {name}")))
    }

    async fn user_id(tx: &mut Transaction<'_, Sqlite>, address: &Address) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT u.id FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE d.name = $1 AND u.localpart = $2",
        )
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("user {address}")))
    }

    /// Deletes messages of one user, keeping usage counters and blob reference counts exact.
    async fn delete_messages(
        tx: &mut Transaction<'_, Sqlite>,
        user: i64,
        ids: &[MessageId],
    ) -> Result<()> {
        let (mut bytes, mut count) = (0i64, 0i64);
        for id in ids {
            let row = sqlx::query(
                "DELETE FROM messages WHERE id = $1 AND user_id = $2 RETURNING size, blob_id",
            )
            .bind(id.0)
            .bind(user)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = row else { continue };
            bytes += row.try_get::<i64, _>(0)?;
            count += 1;
            let blob: i64 = row.try_get(1)?;
            sqlx::query("UPDATE blobs SET refs = refs - 1 WHERE id = $1")
                .bind(blob)
                .execute(&mut **tx)
                .await?;
            sqlx::query("DELETE FROM blobs WHERE id = $1 AND refs <= 0")
                .bind(blob)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query(
            "UPDATE users SET used_bytes = used_bytes - $1, used_messages = used_messages - $2
             WHERE id = $3",
        )
        .bind(bytes)
        .bind(count)
        .bind(user)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE domains SET used_bytes = used_bytes - $1, used_messages = used_messages - $2
             WHERE id = (SELECT domain_id FROM users WHERE id = $3)",
        )
        .bind(bytes)
        .bind(count)
        .bind(user)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn remove_user_in(tx: &mut Transaction<'_, Sqlite>, user: i64) -> Result<()> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM messages WHERE user_id = $1")
            .bind(user)
            .fetch_all(&mut **tx)
            .await?;
        let ids: Vec<MessageId> = ids.into_iter().map(MessageId).collect();
        Self::delete_messages(tx, user, &ids).await?;
        sqlx::query("DELETE FROM maildrop_locks WHERE user_id = $1")
            .bind(user)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The install's UID prefix, read once.
    async fn prefix(
        cell: &tokio::sync::OnceCell<String>,
        tx: &mut Transaction<'_, Sqlite>,
    ) -> Result<String> {
        Ok(cell
            .get_or_try_init(|| async {
                sqlx::query_scalar::<_, String>("SELECT value FROM meta WHERE key = 'uid_prefix'")
                    .fetch_one(&mut **tx)
                    .await
            })
            .await?
            .clone())
    }

    async fn next_uid(tx: &mut Transaction<'_, Sqlite>, prefix: &str) -> Result<String> {
        let n: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + 1 WHERE name = 'uid' RETURNING value",
        )
        .fetch_one(&mut **tx)
        .await?;
        Ok(format!("{prefix}.{n}"))
    }

    /// Stores a whole message (no per-recipient header block) for one user, with its own
    /// body, counting it in the user's and the domain's usage. For imports and notices.
    async fn insert_whole_message(
        tx: &mut Transaction<'_, Sqlite>,
        user: i64,
        uid: &str,
        data: &[u8],
        now: i64,
        import_key: Option<&str>,
    ) -> Result<()> {
        let size = to_i64(data.len() as u64);
        let blob: i64 = sqlx::query_scalar(
            "INSERT INTO blobs (size, refs, created_at) VALUES ($1, 1, $2) RETURNING id",
        )
        .bind(size)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        for (seq, chunk) in data.chunks(CHUNK_SIZE).enumerate() {
            sqlx::query("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
                .bind(blob)
                .bind(to_i64(seq as u64))
                .bind(chunk)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO messages (user_id, uid, blob_id, prefix, size, delivered_at, import_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(user)
        .bind(uid)
        .bind(blob)
        .bind(&[][..] as &[u8])
        .bind(size)
        .bind(now)
        .bind(import_key)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE users SET used_bytes = used_bytes + $1, used_messages = used_messages + 1
             WHERE id = $2",
        )
        .bind(size)
        .bind(user)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE domains SET used_bytes = used_bytes + $1, used_messages = used_messages + 1
             WHERE id = (SELECT domain_id FROM users WHERE id = $2)",
        )
        .bind(size)
        .bind(user)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// After a delivery to `user`: sends the one-time warning when usage crossed the domain's
    /// threshold, and re-arms it when usage is back below. The notice is stored only if it fits
    /// the quotas itself: a warning never takes a mailbox over its limit.
    async fn quota_warning(
        tx: &mut Transaction<'_, Sqlite>,
        user: i64,
        prefix: &str,
        now: i64,
    ) -> Result<()> {
        let r = sqlx::query(
            "SELECT u.quota_bytes, u.quota_messages, u.used_bytes, u.used_messages,
                    u.quota_warned, d.quota_warn_percent, u.localpart, d.name,
                    d.quota_bytes, d.quota_messages, d.used_bytes, d.used_messages
             FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.id = $1",
        )
        .bind(user)
        .fetch_one(&mut **tx)
        .await?;
        let limit = quota(r.try_get(0)?, r.try_get(1)?);
        let usage = Usage {
            bytes: to_u64(r.try_get(2)?),
            messages: to_u64(r.try_get(3)?),
        };
        let warned: bool = r.try_get(4)?;
        let percent: Option<i64> = r.try_get(5)?;
        let due = warning_due(limit, usage, percent.and_then(|p| u8::try_from(p).ok()));
        if due == warned {
            return Ok(());
        }
        sqlx::query("UPDATE users SET quota_warned = $1 WHERE id = $2")
            .bind(due)
            .bind(user)
            .execute(&mut **tx)
            .await?;
        if !due {
            return Ok(());
        }
        let (local, domain): (String, String) = (r.try_get(6)?, r.try_get(7)?);
        let notice = quota_notice(
            &format!("{local}@{domain}"),
            &domain,
            limit,
            usage,
            now / 1000,
        );
        let size = to_i64(notice.len() as u64);
        let fits = |limit: Option<i64>, used: i64, add: i64| limit.is_none_or(|l| used + add <= l);
        let fits = fits(r.try_get(0)?, r.try_get(2)?, size)
            && fits(r.try_get(1)?, r.try_get(3)?, 1)
            && fits(r.try_get(8)?, r.try_get(10)?, size)
            && fits(r.try_get(9)?, r.try_get(11)?, 1);
        if fits {
            let uid = Self::next_uid(tx, prefix).await?;
            Self::insert_whole_message(tx, user, &uid, &notice, now, None).await?;
        }
        Ok(())
    }

    /// Refuses quotas where a user's limit is larger than their domain's.
    async fn check_quota_nesting(tx: &mut Transaction<'_, Sqlite>, domain: i64) -> Result<()> {
        let n: i64 = sqlx::query_scalar(QUOTA_NESTING)
            .bind(domain)
            .fetch_one(&mut **tx)
            .await?;
        quota_nesting_result(n)
    }
}

#[async_trait]
impl Directory for SqliteStore {
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
        sqlx::query("INSERT INTO domains (name, created_at) VALUES ($1, $2)")
            .bind(name.as_str())
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("domain {name} already exists"))
                }
                other => other,
            })?;
        Ok(())
    }

    async fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        let rows = sqlx::query(
            "SELECT d.name, d.quota_bytes, d.quota_messages, d.used_bytes, d.used_messages,
                    (SELECT count(*) FROM users u WHERE u.domain_id = d.id)
             FROM domains d ORDER BY d.name",
        )
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
        let mut tx = self.write().await?;
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
        let mut tx = self.write().await?;
        let domain = Self::domain_id(&mut tx, name).await?;
        let (b, m) = quota_binds(change);
        sqlx::query(
            "UPDATE domains SET quota_bytes = CASE WHEN $1 THEN $2 ELSE quota_bytes END,
                                quota_messages = CASE WHEN $3 THEN $4 ELSE quota_messages END
             WHERE id = $5",
        )
        .bind(b.0)
        .bind(b.1)
        .bind(m.0)
        .bind(m.1)
        .bind(domain)
        .execute(&mut *tx)
        .await?;
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
        let mut tx = self.write().await?;
        let domain = Self::domain_id(&mut tx, &address.domain).await?;
        let row = sqlx::query(
            "SELECT max_users, (SELECT count(*) FROM users WHERE domain_id = $1)
             FROM domains WHERE id = $1",
        )
        .bind(domain)
        .fetch_one(&mut *tx)
        .await?;
        let (max, users): (Option<i64>, i64) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(max) = max.filter(|max| users >= *max) {
            return Err(StoreError::Conflict(format!(
                "domain {} has reached its limit of {max} users",
                address.domain
            )));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (domain_id, localpart, password_hash, created_at, scram_verifier)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(domain)
        .bind(address.local.as_str())
        .bind(password_hash)
        .bind(now_ms())
        .bind(scram)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("user {address} already exists"))
            }
            other => other,
        })?;
        tx.commit().await?;
        Ok(UserId(id))
    }

    async fn list_users(&self, domain: &DomainName) -> Result<Vec<UserInfo>> {
        let mut tx = self.pool.begin().await?;
        let domain_id = Self::domain_id(&mut tx, domain).await?;
        let rows = sqlx::query(
            "SELECT localpart, quota_bytes, quota_messages, used_bytes, used_messages
             FROM users WHERE domain_id = $1 ORDER BY localpart",
        )
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
        let mut tx = self.write().await?;
        let user = Self::user_id(&mut tx, address).await?;
        sqlx::query("UPDATE users SET password_hash = $1, scram_verifier = $2 WHERE id = $3")
            .bind(password_hash)
            .bind(scram)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    #[instrument(skip_all, fields(user = %address))]
    async fn remove_user(&self, address: &Address) -> Result<()> {
        let mut tx = self.write().await?;
        let user = Self::user_id(&mut tx, address).await?;
        Self::remove_user_in(&mut tx, user).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_user_quota(&self, address: &Address, change: QuotaChange) -> Result<()> {
        let mut tx = self.write().await?;
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
        let domain: i64 = sqlx::query_scalar("SELECT domain_id FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        Self::check_quota_nesting(&mut tx, domain).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_user(&self, address: &Address) -> Result<Option<UserAuth>> {
        let row = sqlx::query(
            "SELECT u.id, u.password_hash, u.scram_verifier FROM users u JOIN domains d ON d.id = u.domain_id
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
            })
        })
        .transpose()
    }

    async fn domain_policy(&self, name: &DomainName) -> Result<Option<DomainPolicy>> {
        let row = sqlx::query(
            "SELECT d.name, d.login_forms FROM domains d WHERE d.name = $1
             UNION ALL
             SELECT d.name, d.login_forms FROM domain_aliases a JOIN domains d ON d.id = a.domain_id
             WHERE a.alias = $1",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(DomainPolicy {
                name: DomainName::parse(r.try_get(0)?)?,
                login_forms: LoginForms::parse(r.try_get(1)?)?,
            })
        })
        .transpose()
    }

    async fn set_login_forms(&self, domain: &DomainName, forms: LoginForms) -> Result<()> {
        let updated = sqlx::query("UPDATE domains SET login_forms = $1 WHERE name = $2")
            .bind(forms.to_string())
            .bind(domain.as_str())
            .execute(&self.pool)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("domain {domain}")));
        }
        Ok(())
    }

    async fn set_apop_secret(&self, address: &Address, secret: Option<String>) -> Result<()> {
        let mut tx = self.write().await?;
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
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("domain {domain}")));
        }
        Ok(())
    }

    async fn find_apop_user(&self, address: &Address) -> Result<Option<ApopUser>> {
        let row = sqlx::query(
            "SELECT u.id, u.apop_secret, d.allow_apop FROM users u JOIN domains d ON d.id = u.domain_id
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
        let mut tx = self.write().await?;
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
        sqlx::query(
            "INSERT INTO domain_aliases (alias, domain_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(alias.as_str())
        .bind(target)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("alias {alias} already exists"))
            }
            other => other,
        })?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_alias(&self, alias: &DomainName) -> Result<()> {
        let removed = sqlx::query("DELETE FROM domain_aliases WHERE alias = $1")
            .bind(alias.as_str())
            .execute(&self.pool)
            .await?;
        if removed.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("alias {alias}")));
        }
        Ok(())
    }

    async fn list_aliases(&self) -> Result<Vec<(DomainName, DomainName)>> {
        let rows = sqlx::query(
            "SELECT a.alias, d.name FROM domain_aliases a JOIN domains d ON d.id = a.domain_id
             ORDER BY a.alias",
        )
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

    async fn record_auth_failure(&self, keys: &[String]) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM auth_failures WHERE at < $1")
            .bind(now - 3_600_000)
            .execute(&mut *tx)
            .await?;
        for key in keys {
            sqlx::query("INSERT INTO auth_failures (key, at) VALUES ($1, $2)")
                .bind(key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn auth_failures(&self, keys: &[String], window: Duration) -> Result<Vec<u64>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await?;
        auth_counts(&mut conn, keys, now_ms(), window).await
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
        // One write transaction: SQLite has one writer at a time, so the count sees every
        // attempt counted before this one.
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM auth_failures WHERE at < $1")
            .bind(attempt.at - 3_600_000)
            .execute(&mut *tx)
            .await?;
        let mut q =
            sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO auth_failures (key, at, attempt) ");
        q.push_values(keys, |mut row, key| {
            row.push_bind(key.as_str())
                .push_bind(attempt.at)
                .push_bind(attempt.id);
        });
        q.build().execute(&mut *tx).await?;
        let counts = auth_counts(&mut tx, keys, attempt.at, window).await?;
        tx.commit().await?;
        Ok((attempt, counts))
    }

    async fn forget_auth_attempt(&self, attempt: &AuthAttempt, clear: &[String]) -> Result<()> {
        let mut tx = self.write().await?;
        for key in &attempt.keys {
            sqlx::query("DELETE FROM auth_failures WHERE key = $1 AND at = $2 AND attempt = $3")
                .bind(key)
                .bind(attempt.at)
                .bind(attempt.id)
                .execute(&mut *tx)
                .await?;
        }
        for key in clear {
            sqlx::query("DELETE FROM auth_failures WHERE key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The `auth_failures` rows in the `window` before `now` under each of `keys` (not empty), in
/// their order: one statement, the keys as a VALUES list (column1: position, column2: key).
async fn auth_counts(
    conn: &mut sqlx::SqliteConnection,
    keys: &[String],
    now: i64,
    window: Duration,
) -> Result<Vec<u64>> {
    let since = now - i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
    let mut q = sqlx::QueryBuilder::<Sqlite>::new("SELECT count(a.key) FROM (");
    q.push_values(keys.iter().zip(0i64..), |mut row, (key, n)| {
        row.push_bind(n).push_bind(key.as_str());
    });
    q.push(") k LEFT JOIN auth_failures a ON a.key = k.column2 AND a.at >= ")
        .push_bind(since)
        .push(" GROUP BY k.column1 ORDER BY k.column1");
    let counts: Vec<i64> = q.build_query_scalar().fetch_all(conn).await?;
    Ok(counts.into_iter().map(to_u64).collect())
}

#[async_trait]
impl Maildrops for SqliteStore {
    async fn recover(&self, _me: &Claimant) -> Result<()> {
        let mut tx = self.write().await?;
        let locks = sqlx::query("DELETE FROM maildrop_locks WHERE node = $1 AND incarnation <> $2")
            .bind(&self.node)
            .bind(&self.incarnation)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let blobs = sqlx::query("DELETE FROM blobs WHERE pending_node = $1")
            .bind(&self.node)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        tracing::info!(locks, blobs, "recovered from previous run");
        Ok(())
    }

    // The serve lock is the claim (see `recover`): nothing to renew or give up here.
    async fn heartbeat(&self) -> Result<()> {
        Ok(())
    }

    async fn leave(&self) -> Result<()> {
        Ok(())
    }

    #[instrument(skip_all, fields(user = user.0))]
    async fn lock(&self, user: UserId) -> Result<Lease> {
        let now = now_ms();
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM maildrop_locks WHERE user_id = $1 AND expires_at < $2")
            .bind(user.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let token: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + 1 WHERE name = 'lock_token' RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?;
        let taken = sqlx::query(
            "INSERT INTO maildrop_locks (user_id, node, incarnation, token, expires_at, locked_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.0)
        .bind(&self.node)
        .bind(&self.incarnation)
        .bind(token)
        .bind(now + i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 2))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken == 0 {
            return Err(StoreError::InUse);
        }
        // LOGIN-DELAY: refused logins do not move the clock; only successful ones do.
        let row = sqlx::query(
            "SELECT d.login_delay_secs, u.last_login_at FROM users u
             JOIN domains d ON d.id = u.domain_id WHERE u.id = $1",
        )
        .bind(user.0)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let (delay, last): (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
            if let (Some(delay), Some(last)) = (delay, last) {
                let wait_ms = last.saturating_add(delay.saturating_mul(1000)) - now;
                if wait_ms > 0 {
                    let secs = (wait_ms + 999) / 1000;
                    return Err(StoreError::LoginDelay(
                        u32::try_from(secs).unwrap_or(u32::MAX),
                    ));
                }
            }
        }
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO hourly_stats (hour, domain_id, logins)
             SELECT $1, domain_id, 1 FROM users WHERE id = $2
             ON CONFLICT (hour, domain_id) DO UPDATE SET logins = logins + 1",
        )
        .bind(now / 3_600_000)
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.held.add(token);
        Ok(Lease { user, token })
    }

    async fn unlock(&self, lease: &Lease) -> Result<()> {
        self.held.remove(lease.token);
        self.release(lease).await?;
        Ok(())
    }

    async fn renew_leases(&self) -> Result<Vec<i64>> {
        let tokens = self.held.tokens();
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let until = now_ms() + i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let list = format!(
            "[{}]",
            tokens
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        let renewed: Vec<i64> = sqlx::query_scalar(
            "UPDATE maildrop_locks SET expires_at = $1
             WHERE incarnation = $2 AND token IN (SELECT value FROM json_each($3))
             RETURNING token",
        )
        .bind(until)
        .bind(&self.incarnation)
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        Ok(self.held.drop_missing(&tokens, &renewed))
    }

    async fn list(&self, user: UserId) -> Result<Vec<MessageMeta>> {
        // One row for the whole listing (see `parse_listing`): a large maildrop's rows would
        // otherwise each be decoded (and, on SQLite, handed across threads) one by one. The
        // index `messages_listing` covers the inner query, in id order, without a sort.
        let listing: Option<String> = sqlx::query_scalar(
            "SELECT group_concat(id || ' ' || size || ' ' || blob_id || ' ' || uid, char(10))
             FROM (SELECT id, size, blob_id, uid FROM messages WHERE user_id = $1 ORDER BY id)",
        )
        .bind(user.0)
        .fetch_one(&self.pool)
        .await?;
        parse_listing(listing.as_deref().unwrap_or_default())
    }

    async fn read_part(&self, message: &MessageMeta, part: u32) -> Result<Option<Vec<u8>>> {
        let data = if part == 0 {
            sqlx::query_scalar("SELECT prefix FROM messages WHERE id = $1")
                .bind(message.id.0)
                .fetch_optional(&self.pool)
                .await?
        } else {
            sqlx::query_scalar("SELECT data FROM blob_chunks WHERE blob_id = $1 AND seq = $2")
                .bind(message.blob.0)
                .bind(i64::from(part - 1))
                .fetch_optional(&self.pool)
                .await?
        };
        Ok(data)
    }

    async fn read_parts(
        &self,
        message: &MessageMeta,
        first: u32,
        count: u32,
    ) -> Result<Vec<Vec<u8>>> {
        let mut parts = Vec::new();
        let mut next = first;
        if next == 0 && count > 0 {
            // The header block and the first body chunk in one statement: all of a small
            // message, which is what most RETRs read.
            let row: Option<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT m.prefix, c.data FROM messages m
                 LEFT JOIN blob_chunks c ON c.blob_id = m.blob_id AND c.seq = 0 AND $2
                 WHERE m.id = $1",
            )
            .bind(message.id.0)
            .bind(count > 1)
            .fetch_optional(&self.pool)
            .await?;
            let Some((prefix, chunk)) = row else {
                return Ok(parts);
            };
            parts.push(prefix);
            next = 1;
            if count > 1 {
                let Some(chunk) = chunk else {
                    return Ok(parts);
                };
                parts.push(chunk);
                next = 2;
            }
        }
        let want = count.saturating_sub(u32::try_from(parts.len()).unwrap_or(u32::MAX));
        if want == 0 {
            return Ok(parts);
        }
        // Body part `n` is chunk `n - 1`.
        let seq = |n: u32| i64::from(n);
        let (from, to) = (next - 1, (next - 1).saturating_add(want));
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, data FROM blob_chunks WHERE blob_id = $1 AND seq >= $2 AND seq < $3
             ORDER BY seq",
        )
        .bind(message.blob.0)
        .bind(seq(from))
        .bind(seq(to))
        .fetch_all(&self.pool)
        .await?;
        // A missing chunk ends the message, as `read_part`'s `None` does.
        for ((got, data), expected) in rows.into_iter().zip(from..) {
            if got != seq(expected) {
                break;
            }
            parts.push(data);
        }
        Ok(parts)
    }

    #[instrument(skip_all, fields(user = lease.user.0, deleted = deleted.len()))]
    async fn commit_update(&self, lease: &Lease, deleted: &[MessageId]) -> Result<()> {
        self.held.remove(lease.token);
        if deleted.is_empty() {
            // Nothing to apply: releasing the lease is the whole UPDATE state, one statement.
            return if self.release(lease).await? {
                Ok(())
            } else {
                Err(StoreError::LeaseLost)
            };
        }
        let mut tx = self.write().await?;
        let held = sqlx::query("DELETE FROM maildrop_locks WHERE user_id = $1 AND token = $2")
            .bind(lease.user.0)
            .bind(lease.token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if held == 0 {
            return Err(StoreError::LeaseLost);
        }
        Self::delete_messages(&mut tx, lease.user.0, deleted).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Delivery for SqliteStore {
    async fn find_recipient(&self, address: &Address) -> Result<Option<UserId>> {
        // Not `find_user`: a disabled account cannot log in but still receives mail. The
        // domain, or the domain an alias stands for, in the same statement.
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT u.id FROM users u
             WHERE u.localpart = $2 AND u.domain_id = (
                 SELECT id FROM domains WHERE name = $1
                 UNION ALL
                 SELECT domain_id FROM domain_aliases WHERE alias = $1
                 LIMIT 1)",
        )
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(id.map(UserId))
    }

    async fn accept_recipient(
        &self,
        address: &Address,
        size: Option<u64>,
    ) -> Result<Option<UserId>> {
        let row = sqlx::query_as(RECIPIENT_AT_RCPT)
            .bind(address.domain.as_str())
            .bind(address.local.as_str())
            .bind(to_i64(size.unwrap_or(1)))
            .fetch_optional(&self.pool)
            .await?;
        recipient_at_rcpt(row)
    }

    async fn begin_blob(&self) -> Result<BlobId> {
        let id = sqlx::query_scalar(
            "INSERT INTO blobs (pending_node, created_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(&self.node)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(BlobId(id))
    }

    async fn append_chunk(&self, blob: BlobId, seq: u32, data: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
            .bind(blob.0)
            .bind(i64::from(seq))
            .bind(data)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn deliver(&self, parcel: Parcel) -> Result<Vec<Result<()>>> {
        self.deliveries.deliver(parcel).await
    }

    async fn discard_blob(&self, blob: BlobId) -> Result<()> {
        sqlx::query("DELETE FROM blobs WHERE id = $1 AND pending_node IS NOT NULL")
            .bind(blob.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Stores deliveries, a batch per transaction (see `group`).
struct Writer {
    pool: SqlitePool,
    /// The store's UID prefix cell.
    uid_prefix: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

/// Rows per multi-row `INSERT` in `Writer::flush`: 6 parameters each stays far below SQLite's
/// limit of 32,766.
const ROWS_PER_INSERT: usize = 1000;

impl Writer {
    /// The recipients' quotas and usage. No row locks here: the batch's `BEGIN IMMEDIATE` holds
    /// the database's one write lock until the commit. `users` is a JSON array of ids.
    async fn read_accounts(tx: &mut Transaction<'_, Sqlite>, users: &str) -> Result<Accounts> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{ACCOUNT_COLUMNS} WHERE u.id IN (SELECT value FROM json_each($1))"
        )))
        .bind(users)
        .fetch_all(&mut **tx)
        .await?;
        Accounts::from_rows(&rows)
    }

    /// Writes what `pending` holds and empties it, in a handful of statements whatever the
    /// batch's size: every statement is a hand-over to SQLite's thread and back, and those
    /// hand-overs, not SQLite's work, were what a delivery cost (docs/BENCHMARKS.md, (d)).
    async fn flush(
        pending: &mut Pending<'_>,
        tx: &mut Transaction<'_, Sqlite>,
        prefix: &str,
        now: i64,
    ) -> Result<()> {
        let p = std::mem::take(pending);
        if !p.unused_blobs.is_empty() {
            sqlx::query("DELETE FROM blobs WHERE id IN (SELECT value FROM json_each($1))")
                .bind(json_ids(p.unused_blobs.iter().copied()))
                .execute(&mut **tx)
                .await?;
        }
        if p.blobs.is_empty() {
            return Ok(());
        }
        // A body streamed before the delivery has its row; the others get theirs here, in one
        // statement. AUTOINCREMENT hands out ids in the order of the VALUES, whatever order
        // RETURNING lists them in.
        let mut ids: Vec<i64> = p.blobs.iter().map(|b| b.unwrap_or(0)).collect();
        let new: Vec<usize> = (0..ids.len()).filter(|&i| p.blobs[i].is_none()).collect();
        for part in new.chunks(ROWS_PER_INSERT) {
            let mut q =
                sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO blobs (size, refs, created_at) ");
            q.push_values(part, |mut row, &i| {
                row.push_bind(p.sizes[i])
                    .push_bind(p.refs[i])
                    .push_bind(now);
            });
            q.push(" RETURNING id");
            let mut got: Vec<i64> = q.build_query_scalar().fetch_all(&mut **tx).await?;
            got.sort_unstable();
            for (&i, id) in part.iter().zip(got) {
                ids[i] = id;
            }
        }
        for (i, blob) in p.blobs.iter().enumerate() {
            if let Some(blob) = blob {
                sqlx::query(
                    "UPDATE blobs SET pending_node = NULL, size = $1, refs = $2 WHERE id = $3",
                )
                .bind(p.sizes[i])
                .bind(p.refs[i])
                .bind(blob)
                .execute(&mut **tx)
                .await?;
            }
        }
        let tails: Vec<usize> = (0..ids.len()).filter(|&i| !p.tails[i].is_empty()).collect();
        for part in tails.chunks(ROWS_PER_INSERT) {
            let mut q =
                sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO blob_chunks (blob_id, seq, data) ");
            q.push_values(part, |mut row, &i| {
                row.push_bind(ids[i])
                    .push_bind(p.seqs[i])
                    .push_bind(p.tails[i]);
            });
            q.build().execute(&mut **tx).await?;
        }
        let count = to_i64(p.users.len() as u64);
        let last: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + $1 WHERE name = 'uid' RETURNING value",
        )
        .bind(count)
        .fetch_one(&mut **tx)
        .await?;
        let messages: Vec<usize> = (0..p.users.len()).collect();
        for part in messages.chunks(ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO messages (user_id, uid, blob_id, prefix, size, delivered_at) ",
            );
            q.push_values(part, |mut row, &k| {
                let parcel = usize::try_from(p.parcel[k] - 1).unwrap_or(usize::MAX);
                row.push_bind(p.users[k])
                    .push_bind(format!("{prefix}.{}", last - count + 1 + to_i64(k as u64)))
                    .push_bind(ids.get(parcel).copied())
                    .push_bind(p.prefixes[k])
                    .push_bind(p.message_sizes[k])
                    .push_bind(now);
            });
            q.build().execute(&mut **tx).await?;
        }
        for (table, usage) in [("users", &p.user_usage), ("domains", &p.domain_usage)] {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET used_bytes = used_bytes + t.bytes,
                     used_messages = used_messages + t.messages
                 FROM (SELECT value ->> 0 AS id, value ->> 1 AS bytes, value ->> 2 AS messages
                       FROM json_each($1)) AS t
                 WHERE {table}.id = t.id"
            )))
            .bind(json_usage(usage))
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO hourly_stats (hour, domain_id, delivered)
             SELECT $1, value ->> 0, value ->> 2 FROM json_each($2) WHERE true
             ON CONFLICT (hour, domain_id) DO UPDATE SET delivered = delivered + excluded.delivered",
        )
        .bind(now / 3_600_000)
        .bind(json_usage(&p.domain_usage))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Ids as a JSON array, for `json_each`.
fn json_ids(ids: impl Iterator<Item = i64>) -> String {
    format!(
        "[{}]",
        ids.map(|id| id.to_string()).collect::<Vec<_>>().join(",")
    )
}

/// Usage to add, `[[id, bytes, messages], ...]`, for `json_each`.
fn json_usage(usage: &std::collections::BTreeMap<i64, (i64, i64)>) -> String {
    let rows: Vec<String> = usage
        .iter()
        .map(|(id, (bytes, messages))| format!("[{id},{bytes},{messages}]"))
        .collect();
    format!("[{}]", rows.join(","))
}

#[async_trait]
impl BatchWriter for Writer {
    #[instrument(skip_all, fields(parcels = parcels.len()))]
    async fn write_batch(&self, parcels: &[Parcel]) -> Result<Vec<Outcomes>> {
        let now = now_ms();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let prefix = SqliteStore::prefix(&self.uid_prefix, &mut tx).await?;
        let users = json_ids(
            parcels
                .iter()
                .flat_map(|p| p.recipients.iter().map(|r| r.user.0)),
        );
        let mut accounts = Writer::read_accounts(&mut tx, &users).await?;
        // Quotas are checked here, one delivery after the other against the usage the batch
        // has reached (see `batch`).
        let mut pending = Pending::default();
        let mut all = Vec::with_capacity(parcels.len());
        for parcel in parcels {
            let (outcomes, warn) = pending.add(parcel, &mut accounts)?;
            // A user with a quota of their own may be due a warning, which is itself a message
            // counted in the usage: write what is decided, warn, and read the usage again.
            if !warn.is_empty() {
                Writer::flush(&mut pending, &mut tx, &prefix, now).await?;
                for user in warn {
                    SqliteStore::quota_warning(&mut tx, user, &prefix, now).await?;
                }
                accounts = Writer::read_accounts(&mut tx, &users).await?;
            }
            all.push(outcomes);
        }
        Writer::flush(&mut pending, &mut tx, &prefix, now).await?;
        tx.commit().await?;
        Ok(all)
    }
}

/// A scope as SQL parameters: whether it is `All`, and otherwise its domains as a JSON array
/// for `json_each` (domain names are validated LDH labels, so they need no escaping).
fn scope_binds(scope: &Scope) -> (bool, String) {
    match scope {
        Scope::All => (true, "[]".into()),
        Scope::Domains(list) => (
            false,
            format!(
                "[{}]",
                list.iter()
                    .map(|d| format!("\"{d}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
    }
}

/// The columns `domain_row` reads, from `domains d`.
const DOMAIN_COLUMNS: &str = "d.name, d.quota_bytes, d.quota_messages, d.used_bytes,
    d.used_messages, (SELECT count(*) FROM users u WHERE u.domain_id = d.id), d.max_users,
    d.login_forms, d.allow_apop, d.enabled,
    (SELECT group_concat(a.alias, ',') FROM domain_aliases a WHERE a.domain_id = d.id)";

fn domain_row(r: &sqlx::sqlite::SqliteRow) -> Result<DomainDetail> {
    let aliases: Option<String> = r.try_get(10)?;
    let mut aliases = aliases
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|a| !a.is_empty())
        .map(DomainName::parse)
        .collect::<Result<Vec<_>>>()?;
    aliases.sort();
    Ok(DomainDetail {
        name: DomainName::parse(r.try_get(0)?)?,
        quota: quota(r.try_get(1)?, r.try_get(2)?),
        usage: Usage {
            bytes: to_u64(r.try_get(3)?),
            messages: to_u64(r.try_get(4)?),
        },
        users: to_u64(r.try_get(5)?),
        max_users: r.try_get::<Option<i64>, _>(6)?.map(to_u64),
        login_forms: LoginForms::parse(r.try_get(7)?)?,
        allow_apop: r.try_get(8)?,
        enabled: r.try_get(9)?,
        aliases,
    })
}

/// The columns `user_row` reads, from `users u`.
const USER_COLUMNS: &str = "u.localpart, u.quota_bytes, u.quota_messages, u.used_bytes,
    u.used_messages, u.enabled, u.created_at";

fn user_row(r: &sqlx::sqlite::SqliteRow, domain: &DomainName) -> Result<UserDetail> {
    Ok(UserDetail {
        address: Address {
            local: LocalPart::parse(r.try_get(0)?)?,
            domain: domain.clone(),
        },
        quota: quota(r.try_get(1)?, r.try_get(2)?),
        usage: Usage {
            bytes: to_u64(r.try_get(3)?),
            messages: to_u64(r.try_get(4)?),
        },
        enabled: r.try_get(5)?,
        created_at: r.try_get(6)?,
    })
}

impl SqliteStore {
    /// An admin row (`id, email, password_hash, is_super`) with its scope.
    async fn admin_account(
        &self,
        row: Option<sqlx::sqlite::SqliteRow>,
    ) -> Result<Option<AdminAccount>> {
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.try_get(0)?;
        let scope = if row.try_get(3)? {
            Scope::All
        } else {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT d.name FROM admin_domains a JOIN domains d ON d.id = a.domain_id
                 WHERE a.admin_id = $1 ORDER BY d.name",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            Scope::Domains(
                names
                    .iter()
                    .map(|n| DomainName::parse(n))
                    .collect::<Result<_>>()?,
            )
        };
        Ok(Some(AdminAccount {
            id: AdminId(id),
            email: row.try_get(1)?,
            password_hash: row.try_get(2)?,
            scope,
        }))
    }
}

#[async_trait]
impl Admin for SqliteStore {
    #[instrument(skip_all, fields(admin = %email))]
    async fn add_admin(&self, email: &str, password_hash: &str, scope: &Scope) -> Result<AdminId> {
        let mut tx = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO admins (email, password_hash, is_super, created_at)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(email)
        .bind(password_hash)
        .bind(scope.is_all())
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("admin {email} already exists"))
            }
            other => other,
        })?;
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
        let row =
            sqlx::query("SELECT id, email, password_hash, is_super FROM admins WHERE email = $1")
                .bind(email)
                .fetch_optional(&self.pool)
                .await?;
        self.admin_account(row).await
    }

    async fn admin_by_id(&self, id: AdminId) -> Result<Option<AdminAccount>> {
        let row =
            sqlx::query("SELECT id, email, password_hash, is_super FROM admins WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        self.admin_account(row).await
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

    async fn use_api_token(&self, token_hash: &str, now: i64) -> Result<Option<AdminId>> {
        let admin: Option<i64> = sqlx::query_scalar(
            "UPDATE api_tokens SET last_used = $1 WHERE token_hash = $2 RETURNING admin_id",
        )
        .bind(now)
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(admin.map(AdminId))
    }

    async fn list_api_tokens(&self, admin: AdminId) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, last_used FROM api_tokens WHERE admin_id = $1
             ORDER BY id",
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
        if removed.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("API token {id}")));
        }
        Ok(())
    }

    async fn domain_page(
        &self,
        scope: &Scope,
        search: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<DomainDetail>> {
        let (all, list) = scope_binds(scope);
        let filter = "($1 OR d.name IN (SELECT value FROM json_each($2)))
                      AND instr(lower(d.name), lower($3)) > 0";
        let mut tx = self.pool.begin().await?;
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM domains d WHERE {filter}"
        )))
        .bind(all)
        .bind(&list)
        .bind(search)
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains d WHERE {filter}
             ORDER BY d.name LIMIT $4 OFFSET $5"
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
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains d WHERE d.name = $1"
        )))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(domain_row).transpose()
    }

    #[instrument(skip_all, fields(domain = %name))]
    async fn update_domain(&self, name: &DomainName, settings: &DomainSettings) -> Result<()> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE domains SET quota_bytes = $1, quota_messages = $2, max_users = $3,
                                login_forms = $4, enabled = $5
             WHERE name = $6",
        )
        .bind(settings.quota.bytes.map(to_i64))
        .bind(settings.quota.messages.map(to_i64))
        .bind(settings.max_users.map(to_i64))
        .bind(settings.login_forms.to_string())
        .bind(settings.enabled)
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        let domain = Self::domain_id(&mut tx, name).await?;
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
        let filter = "u.domain_id = $1 AND instr(lower(u.localpart), lower($2)) > 0";
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM users u WHERE {filter}"
        )))
        .bind(domain_id)
        .bind(search)
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE {filter}
             ORDER BY u.localpart LIMIT $3 OFFSET $4"
        )))
        .bind(domain_id)
        .bind(search)
        .bind(to_i64(limit))
        .bind(to_i64(offset))
        .fetch_all(&mut *tx)
        .await?;
        Ok(Page {
            items: rows
                .iter()
                .map(|r| user_row(r, domain))
                .collect::<Result<_>>()?,
            total: to_u64(total),
        })
    }

    async fn user_detail(&self, address: &Address) -> Result<Option<UserDetail>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE d.name = $1 AND u.localpart = $2"
        )))
        .bind(address.domain.as_str())
        .bind(address.local.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_row(&r, &address.domain)).transpose()
    }

    #[instrument(skip_all, fields(user = %address, enabled))]
    async fn set_user_enabled(&self, address: &Address, enabled: bool) -> Result<()> {
        let mut tx = self.write().await?;
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
        let (all, list) = scope_binds(scope);
        let rows = sqlx::query(
            "SELECT u.localpart, d.name, l.node, l.locked_at
             FROM maildrop_locks l JOIN users u ON u.id = l.user_id
                  JOIN domains d ON d.id = u.domain_id
             WHERE l.expires_at > $1
               AND ($2 OR d.name IN (SELECT value FROM json_each($3)))
             ORDER BY d.name, u.localpart",
        )
        .bind(now_ms())
        .bind(all)
        .bind(list)
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
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, object, domain, before, after, ip, success)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(now_ms())
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.object)
        .bind(entry.domain.as_ref().map(DomainName::as_str))
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
        let (all, list) = scope_binds(scope);
        // `domain IN (...)` is never true for a NULL domain: service-wide entries stay hidden
        // from domain admins.
        let cond = "($1 OR domain IN (SELECT value FROM json_each($2)))
                    AND instr(lower(actor), lower($3)) > 0
                    AND instr(lower(action), lower($4)) > 0
                    AND instr(lower(object), lower($5)) > 0";
        let mut tx = self.pool.begin().await?;
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM audit_log WHERE {cond}"
        )))
        .bind(all)
        .bind(&list)
        .bind(&filter.actor)
        .bind(&filter.action)
        .bind(&filter.object)
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
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
                        .try_get::<Option<&str>, _>(4)?
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
        let (all, list) = scope_binds(scope);
        let rows = sqlx::query(
            "SELECT h.hour, sum(h.delivered), sum(h.logins)
             FROM hourly_stats h JOIN domains d ON d.id = h.domain_id
             WHERE h.hour >= $1 AND ($2 OR d.name IN (SELECT value FROM json_each($3)))
             GROUP BY h.hour ORDER BY h.hour",
        )
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

    async fn totals(&self, scope: &Scope) -> Result<Totals> {
        let (all, list) = scope_binds(scope);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT count(*),
                    coalesce(sum((SELECT count(*) FROM users u WHERE u.domain_id = d.id)), 0),
                    coalesce(sum(d.used_bytes), 0), coalesce(sum(d.used_messages), 0),
                    coalesce(sum(d.quota_bytes), 0), count(d.quota_bytes)
             FROM domains d
             WHERE $1 OR d.name IN (SELECT value FROM json_each($2))",
        )
        .bind(all)
        .bind(&list)
        .fetch_one(&mut *tx)
        .await?;
        let sessions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM maildrop_locks l JOIN users u ON u.id = l.user_id
                  JOIN domains d ON d.id = u.domain_id
             WHERE l.expires_at > $1
               AND ($2 OR d.name IN (SELECT value FROM json_each($3)))",
        )
        .bind(now_ms())
        .bind(all)
        .bind(&list)
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
}

#[async_trait]
impl Policies for SqliteStore {
    async fn domain_policies(&self, domain: &DomainName) -> Result<DomainPolicies> {
        let row = sqlx::query(
            "SELECT quota_tempfail, quota_warn_percent, retention_days, login_delay_secs
             FROM domains WHERE name = $1",
        )
        .bind(domain.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("domain {domain}")))?;
        Ok(DomainPolicies {
            quota_tempfail: row.try_get(0)?,
            quota_warn_percent: row
                .try_get::<Option<i64>, _>(1)?
                .and_then(|p| u8::try_from(p).ok()),
            retention_days: row
                .try_get::<Option<i64>, _>(2)?
                .and_then(|d| u32::try_from(d).ok()),
            login_delay_secs: row
                .try_get::<Option<i64>, _>(3)?
                .and_then(|d| u32::try_from(d).ok()),
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
        .bind(p.retention_days.map(i64::from))
        .bind(p.login_delay_secs.map(i64::from))
        .bind(domain.as_str())
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("domain {domain}")));
        }
        Ok(())
    }

    async fn user_policy(&self, user: UserId) -> Result<UserPolicy> {
        let row = sqlx::query(
            "SELECT d.retention_days, d.login_delay_secs FROM users u
             JOIN domains d ON d.id = u.domain_id WHERE u.id = $1",
        )
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound("user".into()))?;
        Ok(UserPolicy {
            retention_days: row
                .try_get::<Option<i64>, _>(0)?
                .and_then(|d| u32::try_from(d).ok()),
            login_delay_secs: row
                .try_get::<Option<i64>, _>(1)?
                .and_then(|d| u32::try_from(d).ok()),
        })
    }

    async fn policy_summary(&self) -> Result<PolicySummary> {
        let row = sqlx::query(POLICY_SUMMARY).fetch_one(&self.pool).await?;
        let min = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        Ok(PolicySummary {
            min_retention_days: min(row.try_get(0)?),
            retention_varies: row.try_get::<i64, _>(1)? > 1,
            min_login_delay_secs: min(row.try_get(2)?),
            login_delay_varies: row.try_get::<i64, _>(3)? > 1,
        })
    }

    #[instrument(skip_all)]
    async fn expire(&self, now: i64, batch: u32) -> Result<ExpireReport> {
        let mut report = ExpireReport::default();
        loop {
            // BEGIN IMMEDIATE: one writer at a time, so several frontends (or several runs)
            // never work on the same rows; each batch is its own short transaction.
            let mut tx = self.write().await?;
            let rows = sqlx::query(
                "SELECT m.id, m.user_id FROM messages m
                 JOIN users u ON u.id = m.user_id JOIN domains d ON d.id = u.domain_id
                 WHERE d.retention_days IS NOT NULL
                   AND m.delivered_at < $1 - d.retention_days * 86400000
                   AND NOT EXISTS (SELECT 1 FROM maildrop_locks l
                                   WHERE l.user_id = m.user_id AND l.expires_at >= $2)
                 ORDER BY m.id LIMIT $3",
            )
            .bind(now)
            // Leases run on the real clock, whatever `now` the caller tests with.
            .bind(now_ms())
            .bind(i64::from(batch.max(1)))
            .fetch_all(&mut *tx)
            .await?;
            let found = rows.len();
            let mut per_user = std::collections::BTreeMap::<i64, Vec<MessageId>>::new();
            for r in &rows {
                per_user
                    .entry(r.try_get(1)?)
                    .or_default()
                    .push(MessageId(r.try_get(0)?));
            }
            for (user, ids) in &per_user {
                Self::delete_messages(&mut tx, *user, ids).await?;
            }
            tx.commit().await?;
            report.batches += 1;
            report.deleted += found as u64;
            if found < batch.max(1) as usize {
                return Ok(report);
            }
        }
    }

    #[instrument(skip_all, fields(user = user.0, messages = messages.len()))]
    async fn import(&self, user: UserId, messages: &[ImportMessage]) -> Result<Vec<ImportOutcome>> {
        let now = now_ms();
        let mut tx = self.write().await?;
        let prefix = Self::prefix(&self.uid_prefix, &mut tx).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
            .bind(user.0)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound("user".into()));
        }
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
                        sqlx::query(
                            "UPDATE counters SET value = max(value, $1) WHERE name = 'uid'",
                        )
                        .bind(n)
                        .execute(&mut *tx)
                        .await?;
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
            Self::insert_whole_message(&mut tx, user.0, uid, &m.data, now, Some(&m.key)).await?;
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

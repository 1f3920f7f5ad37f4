//! The production backend: Postgres, shared by many stateless frontends. Lease times come from
//! the database clock, so frontends with skewed clocks agree on expiry. Counters that every
//! delivery needs (UIDs, lock tokens) are sequences, not rows, so deliveries do not queue on
//! one hot row. `synchronous_commit` is forced on for every connection: a delivery or UPDATE
//! is on disk before its reply.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use tracing::instrument;

use crate::batch::{ACCOUNT_COLUMNS, Accounts, Pending};
use crate::convert::*;
use crate::group::{BatchWriter, GroupCommit, Outcomes};
use crate::held::Held;
use crate::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Connection settings of the Postgres backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    pub max_connections: u32,
    /// How long an operation waits for a pooled connection before failing (`[SYS/TEMP]`).
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 20,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Claims `nodes` row `$1` for incarnation `$2` (serve lock `$3`, host `$4`, pid `$5`, TTL `$6`
/// seconds); the caller completes the `DO UPDATE`.
const CLAIM_NODE: &str = "INSERT INTO nodes AS n
        (node, incarnation, serve_lock, host, pid, started_at, renewed_at, expires_at)
    VALUES ($1, $2, $3, $4, $5, clock_timestamp(), clock_timestamp(),
            clock_timestamp() + make_interval(secs => $6))
    ON CONFLICT (node) DO UPDATE";

/// Another server's claim on a node, as a starting server sees it.
struct NodeHolder {
    incarnation: String,
    host: String,
    pid: i64,
    /// Seconds since it started, since it last renewed its claim, until the claim lapses.
    up: f64,
    renewed_ago: f64,
    expires_in: f64,
    /// Compared between looks: a change means the holder is alive.
    renewed_at: String,
}

impl std::fmt::Display for NodeHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {}, started {:.0} s ago, last renewed its claim {:.1} s ago",
            self.pid,
            self.host,
            self.up.max(0.0),
            self.renewed_ago.max(0.0)
        )
    }
}

pub struct PostgresStore {
    pool: PgPool,
    node: String,
    incarnation: String,
    /// This server, once `recover` claimed the node for it (the heartbeat re-inserts a claim
    /// row that went missing).
    claimant: std::sync::OnceLock<Claimant>,
    held: Held,
    /// The install's UID prefix (see the first migration).
    uid_prefix: std::sync::Arc<tokio::sync::OnceCell<String>>,
    ttl_secs: f64,
    deliveries: GroupCommit,
}

impl PostgresStore {
    /// The connection pool's size and idle connections now (for the metrics).
    pub fn pool_usage(&self) -> crate::PoolUsage {
        crate::PoolUsage {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
        }
    }

    /// Connects lazily (a frontend starts even while Postgres is down, and recovers by itself);
    /// `migrate` applies pending migrations first, which does need the database.
    pub async fn open(url: &str, lock: LockOptions, pg: PgOptions, migrate: bool) -> Result<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("bad Postgres URL: {e}")))?;
        let options = options
            .options([("synchronous_commit", "on")])
            .application_name("pophost");
        let pool = PgPoolOptions::new()
            .max_connections(pg.max_connections)
            .acquire_timeout(pg.acquire_timeout)
            // Idle connections are closed, so an idle service holds few and Postgres restarts
            // are noticed on the next use rather than on a dead socket.
            .idle_timeout(Duration::from_secs(60))
            .test_before_acquire(true)
            .connect_lazy_with(options);
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
            claimant: std::sync::OnceLock::new(),
            held: Held::default(),
            ttl_secs: lock.ttl.as_secs_f64(),
            deliveries: GroupCommit::start(Writer {
                pool: pool.clone(),
                uid_prefix: uid_prefix.clone(),
            }),
            pool,
            uid_prefix,
        })
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

    /// `recover`'s one transaction: claims the node (see `Maildrops::recover`) and frees what
    /// its previous run left; or, changing nothing, returns the live-looking claim in the way.
    async fn claim_and_recover(&self, me: &Claimant) -> Result<Option<NodeHolder>> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(AssertSqlSafe(format!(
            "{CLAIM_NODE} SET incarnation = EXCLUDED.incarnation, serve_lock = EXCLUDED.serve_lock,
                 host = EXCLUDED.host, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,
                 renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at
             WHERE n.expires_at < clock_timestamp() OR n.serve_lock = EXCLUDED.serve_lock
                OR n.incarnation = EXCLUDED.incarnation
             RETURNING 1"
        )))
        .bind(&self.node)
        .bind(&self.incarnation)
        .bind(&me.serve_lock)
        .bind(&me.host)
        .bind(i64::from(std::process::id()))
        .bind(self.ttl_secs)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            // The upsert row-locked the claim in the way: it is read as it stands.
            let holder = self.node_holder(&mut *tx).await?;
            tx.rollback().await?;
            return Ok(Some(holder.ok_or_else(|| {
                StoreError::Invalid("node claim vanished while being read".into())
            })?));
        }
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
        Ok(None)
    }

    /// The server holding this store's node, if any.
    async fn node_holder<'e>(&self, db: impl sqlx::PgExecutor<'e>) -> Result<Option<NodeHolder>> {
        let row = sqlx::query(
            "SELECT incarnation, host, pid,
                    extract(epoch FROM clock_timestamp() - started_at)::FLOAT8,
                    extract(epoch FROM clock_timestamp() - renewed_at)::FLOAT8,
                    extract(epoch FROM expires_at - clock_timestamp())::FLOAT8,
                    renewed_at::TEXT
             FROM nodes WHERE node = $1",
        )
        .bind(&self.node)
        .fetch_optional(db)
        .await?;
        row.map(|row| {
            Ok(NodeHolder {
                incarnation: row.try_get(0)?,
                host: row.try_get(1)?,
                pid: row.try_get(2)?,
                up: row.try_get(3)?,
                renewed_ago: row.try_get(4)?,
                expires_in: row.try_get(5)?,
                renewed_at: row.try_get(6)?,
            })
        })
        .transpose()
    }

    async fn domain_id(tx: &mut Transaction<'_, Postgres>, name: &DomainName) -> Result<i64> {
        sqlx::query_scalar("SELECT id FROM domains WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("domain {name}")))
    }

    async fn user_id(tx: &mut Transaction<'_, Postgres>, address: &Address) -> Result<i64> {
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
        tx: &mut Transaction<'_, Postgres>,
        user: i64,
        ids: &[MessageId],
    ) -> Result<()> {
        let ids: Vec<i64> = ids.iter().map(|m| m.0).collect();
        // Messages and blob reference counts in one statement (different tables, so the
        // data-modifying CTEs do not touch a row twice); unreferenced blobs go in a second.
        let row = sqlx::query(
            "WITH gone AS (
                 DELETE FROM messages WHERE user_id = $1 AND id = ANY($2)
                 RETURNING size, blob_id
             ), per_blob AS (
                 SELECT blob_id, count(*) AS n FROM gone GROUP BY blob_id
             ), refs AS (
                 UPDATE blobs b SET refs = b.refs - p.n FROM per_blob p
                 WHERE b.id = p.blob_id
                 RETURNING b.id, b.refs
             )
             SELECT (SELECT coalesce(sum(size), 0)::BIGINT FROM gone),
                    (SELECT count(*) FROM gone),
                    coalesce((SELECT array_agg(id) FROM refs WHERE refs <= 0), '{}')",
        )
        .bind(user)
        .bind(&ids)
        .fetch_one(&mut **tx)
        .await?;
        let (bytes, count): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let unreferenced: Vec<i64> = row.try_get(2)?;
        if !unreferenced.is_empty() {
            sqlx::query("DELETE FROM blobs WHERE id = ANY($1)")
                .bind(&unreferenced)
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

    async fn remove_user_in(tx: &mut Transaction<'_, Postgres>, user: i64) -> Result<()> {
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
        tx: &mut Transaction<'_, Postgres>,
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

    async fn next_uid(tx: &mut Transaction<'_, Postgres>, prefix: &str) -> Result<String> {
        let n: i64 = sqlx::query_scalar("SELECT nextval('message_uids')")
            .fetch_one(&mut **tx)
            .await?;
        Ok(format!("{prefix}.{n}"))
    }

    /// Stores a whole message (no per-recipient header block) for one user, with its own
    /// body, counting it in the user's and the domain's usage. For imports and notices.
    async fn insert_whole_message(
        tx: &mut Transaction<'_, Postgres>,
        user: i64,
        uid: &str,
        data: &[u8],
        import_key: Option<&str>,
    ) -> Result<()> {
        let size = to_i64(data.len() as u64);
        let blob: i64 =
            sqlx::query_scalar("INSERT INTO blobs (size, refs) VALUES ($1, 1) RETURNING id")
                .bind(size)
                .fetch_one(&mut **tx)
                .await?;
        for (seq, chunk) in data.chunks(CHUNK_SIZE).enumerate() {
            sqlx::query("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
                .bind(blob)
                .bind(
                    i32::try_from(seq)
                        .map_err(|_| StoreError::Invalid("message too large".into()))?,
                )
                .bind(chunk)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO messages (user_id, uid, blob_id, prefix, size, import_key)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user)
        .bind(uid)
        .bind(blob)
        .bind(&[][..] as &[u8])
        .bind(size)
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

    /// After a delivery to `user` (whose rows the delivery has locked): sends the one-time
    /// warning when usage crossed the domain's threshold, and re-arms it when usage is back
    /// below. The notice is stored only if it fits the quotas: a warning never takes a mailbox
    /// over its limit.
    async fn quota_warning(
        tx: &mut Transaction<'_, Postgres>,
        user: i64,
        prefix: &str,
    ) -> Result<()> {
        let r = sqlx::query(
            "SELECT u.quota_bytes, u.quota_messages, u.used_bytes, u.used_messages,
                    u.quota_warned, d.quota_warn_percent, u.localpart, d.name,
                    d.quota_bytes, d.quota_messages, d.used_bytes, d.used_messages,
                    floor(extract(epoch FROM clock_timestamp()))::BIGINT
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
        let percent: Option<i32> = r.try_get(5)?;
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
        let now: i64 = r.try_get(12)?;
        let notice = quota_notice(&format!("{local}@{domain}"), &domain, limit, usage, now);
        let size = to_i64(notice.len() as u64);
        let fits = |limit: Option<i64>, used: i64, add: i64| limit.is_none_or(|l| used + add <= l);
        let fits = fits(r.try_get(0)?, r.try_get(2)?, size)
            && fits(r.try_get(1)?, r.try_get(3)?, 1)
            && fits(r.try_get(8)?, r.try_get(10)?, size)
            && fits(r.try_get(9)?, r.try_get(11)?, 1);
        if fits {
            let uid = Self::next_uid(tx, prefix).await?;
            Self::insert_whole_message(tx, user, &uid, &notice, None).await?;
        }
        Ok(())
    }

    /// Refuses quotas where a user's limit is larger than their domain's. The caller holds the
    /// domain row locked, so concurrent quota changes are checked one after the other.
    async fn check_quota_nesting(tx: &mut Transaction<'_, Postgres>, domain: i64) -> Result<()> {
        let n: i64 = sqlx::query_scalar(QUOTA_NESTING)
            .bind(domain)
            .fetch_one(&mut **tx)
            .await?;
        quota_nesting_result(n)
    }
}

#[async_trait]
impl Directory for PostgresStore {
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
        sqlx::query("INSERT INTO domains (name) VALUES ($1)")
            .bind(name.as_str())
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        // The domain row stays locked until commit, so concurrent additions cannot both pass
        // the user limit.
        let row =
            sqlx::query("SELECT id, max_users FROM domains WHERE name = $1 FOR NO KEY UPDATE")
                .bind(address.domain.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("domain {}", address.domain)))?;
        let (domain, max): (i64, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(max) = max {
            let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE domain_id = $1")
                .bind(domain)
                .fetch_one(&mut *tx)
                .await?;
            if users >= max {
                return Err(StoreError::Conflict(format!(
                    "domain {} has reached its limit of {max} users",
                    address.domain
                )));
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (domain_id, localpart, password_hash, scram_verifier)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(domain)
        .bind(address.local.as_str())
        .bind(password_hash)
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        let user = Self::user_id(&mut tx, address).await?;
        Self::remove_user_in(&mut tx, user).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_user_quota(&self, address: &Address, change: QuotaChange) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // The domain row first, as deliveries lock it (no wait cycle), and so a concurrent
        // change of the domain's quota and this one see each other in the nesting check.
        let domain = Self::domain_id(&mut tx, &address.domain).await?;
        sqlx::query("SELECT id FROM domains WHERE id = $1 FOR NO KEY UPDATE")
            .bind(domain)
            .execute(&mut *tx)
            .await?;
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
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
        sqlx::query("INSERT INTO domain_aliases (alias, domain_id) VALUES ($1, $2)")
            .bind(alias.as_str())
            .bind(target)
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
        auth_counts(&self.pool, keys, now_ms(), window).await
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
        // Committed on its own before the count: in one transaction, two attempts' inserts
        // would each be invisible to the other's count until both committed.
        sqlx::query(
            "WITH pruned AS (DELETE FROM auth_failures WHERE at < $3)
             INSERT INTO auth_failures (key, at, attempt) SELECT k, $2, $4 FROM unnest($1::text[]) k",
        )
        .bind(keys)
        .bind(attempt.at)
        .bind(attempt.at - 3_600_000)
        .bind(attempt.id)
        .execute(&self.pool)
        .await?;
        let counts = auth_counts(&self.pool, keys, attempt.at, window).await?;
        Ok((attempt, counts))
    }

    async fn forget_auth_attempt(&self, attempt: &AuthAttempt, clear: &[String]) -> Result<()> {
        sqlx::query(
            "DELETE FROM auth_failures
             WHERE (key = ANY($1) AND at = $2 AND attempt = $3) OR key = ANY($4)",
        )
        .bind(&attempt.keys)
        .bind(attempt.at)
        .bind(attempt.id)
        .bind(clear)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The `auth_failures` rows in the `window` before `now` under each of `keys`, in their order:
/// one statement for all of a login's counters.
async fn auth_counts(
    pool: &PgPool,
    keys: &[String],
    now: i64,
    window: Duration,
) -> Result<Vec<u64>> {
    let since = now - i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
    let counts: Vec<i64> = sqlx::query_scalar(
        "SELECT count(a.key) FROM unnest($1::text[]) WITH ORDINALITY AS k(key, n)
         LEFT JOIN auth_failures a ON a.key = k.key AND a.at >= $2
         GROUP BY k.n ORDER BY k.n",
    )
    .bind(keys)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(counts.into_iter().map(to_u64).collect())
}

#[async_trait]
impl Maildrops for PostgresStore {
    async fn recover(&self, me: &Claimant) -> Result<()> {
        // A claim nobody renews lapses at its expiry; one that is renewed meanwhile is a live
        // server's. Polled until one or the other.
        let mut first: Option<NodeHolder> = None;
        loop {
            let Some(holder) = self.claim_and_recover(me).await? else {
                let _ = self.claimant.set(me.clone());
                return Ok(());
            };
            match &first {
                None => {
                    tracing::warn!(
                        node = %self.node,
                        holder = %holder,
                        "another server holds this node_id: waiting to see whether it renews \
                         its claim (alive: this start is refused) or lets it lapse in {:.0} s \
                         (gone: this server starts then)",
                        holder.expires_in.max(0.0)
                    );
                    first = Some(holder);
                }
                Some(seen)
                    if seen.incarnation != holder.incarnation
                        || seen.renewed_at != holder.renewed_at =>
                {
                    return Err(StoreError::Conflict(format!(
                        "node_id {:?} is in use by another running pophost ({holder}): give \
                         each frontend its own node_id",
                        self.node
                    )));
                }
                Some(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn heartbeat(&self) -> Result<()> {
        let Some(me) = self.claimant.get() else {
            return Err(StoreError::Invalid("heartbeat before recover".into()));
        };
        // Re-inserts a claim row that went missing; never takes over another server's.
        let renewed = sqlx::query(AssertSqlSafe(format!(
            "{CLAIM_NODE} SET renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at
             WHERE n.incarnation = EXCLUDED.incarnation RETURNING 1"
        )))
        .bind(&self.node)
        .bind(&self.incarnation)
        .bind(&me.serve_lock)
        .bind(&me.host)
        .bind(i64::from(std::process::id()))
        .bind(self.ttl_secs)
        .fetch_optional(&self.pool)
        .await?;
        if renewed.is_some() {
            return Ok(());
        }
        let holder = match self.node_holder(&self.pool).await? {
            Some(holder) => holder.to_string(),
            None => "unknown".into(),
        };
        Err(StoreError::Conflict(format!(
            "node_id {:?} was taken over by another pophost ({holder}) while this one went \
             unheard: give each frontend its own node_id",
            self.node
        )))
    }

    async fn leave(&self) -> Result<()> {
        sqlx::query("DELETE FROM nodes WHERE node = $1 AND incarnation = $2")
            .bind(&self.node)
            .bind(&self.incarnation)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[instrument(skip_all, fields(user = user.0))]
    async fn lock(&self, user: UserId) -> Result<Lease> {
        // One statement (its own transaction): the user row first (as deliveries lock it after
        // the domain, never before a stats row), since LOGIN-DELAY reads and moves
        // last_login_at and concurrent logins queue there; then take a free maildrop, or take
        // over a lease whose holder stopped renewing it (a live lease makes the upsert's WHERE
        // false: nothing is returned and no login is counted). A login still inside its
        // LOGIN-DELAY takes nothing. The third column says whether a live lease was there: "in
        // use" is the answer a client should hear before the delay.
        let row = sqlx::query(
            "WITH me AS (
                 SELECT u.id, extract(epoch FROM (u.last_login_at
                            + make_interval(secs => d.login_delay_secs) - clock_timestamp()))::FLOAT8
                            AS wait
                 FROM users u JOIN domains d ON d.id = u.domain_id
                 WHERE u.id = $1
                 FOR NO KEY UPDATE OF u
             ), taken AS (
                 INSERT INTO maildrop_locks (user_id, node, incarnation, token, expires_at, locked_at)
                 SELECT me.id, $2, $3, nextval('lock_tokens'),
                        clock_timestamp() + make_interval(secs => $4), clock_timestamp()
                 FROM me WHERE coalesce(me.wait, 0) <= 0
                 ON CONFLICT (user_id) DO UPDATE
                     SET node = EXCLUDED.node, incarnation = EXCLUDED.incarnation,
                         token = EXCLUDED.token, expires_at = EXCLUDED.expires_at,
                         locked_at = EXCLUDED.locked_at
                     WHERE maildrop_locks.expires_at < clock_timestamp()
                 RETURNING token, user_id
             ), counted AS (
                 INSERT INTO hourly_stats (hour, domain_id, logins)
                 SELECT floor(extract(epoch FROM clock_timestamp()) / 3600)::BIGINT, u.domain_id, 1
                 FROM taken JOIN users u ON u.id = taken.user_id
                 ON CONFLICT (hour, domain_id) DO UPDATE SET logins = hourly_stats.logins + 1
             ), touched AS (
                 UPDATE users SET last_login_at = clock_timestamp()
                 WHERE id IN (SELECT user_id FROM taken)
             )
             SELECT (SELECT token FROM taken), (SELECT wait FROM me),
                    EXISTS (SELECT 1 FROM maildrop_locks
                            WHERE user_id = $1 AND expires_at >= clock_timestamp()),
                    EXISTS (SELECT 1 FROM me)",
        )
        .bind(user.0)
        .bind(&self.node)
        .bind(&self.incarnation)
        .bind(self.ttl_secs)
        .fetch_one(&self.pool)
        .await?;
        let (token, wait, live): (Option<i64>, Option<f64>, bool) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if !row.try_get::<bool, _>(3)? {
            return Err(StoreError::NotFound("user".into()));
        }
        let Some(token) = token else {
            return Err(match wait.filter(|w| *w > 0.0) {
                Some(wait) if !live => StoreError::LoginDelay(wait.ceil() as u32),
                // Live, or taken by a concurrent login since this statement's snapshot.
                _ => StoreError::InUse,
            });
        };
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
        let renewed: Vec<i64> = sqlx::query_scalar(
            "UPDATE maildrop_locks SET expires_at = clock_timestamp() + make_interval(secs => $1)
             WHERE incarnation = $2 AND token = ANY($3)
             RETURNING token",
        )
        .bind(self.ttl_secs)
        .bind(&self.incarnation)
        .bind(&tokens)
        .fetch_all(&self.pool)
        .await?;
        Ok(self.held.drop_missing(&tokens, &renewed))
    }

    async fn list(&self, user: UserId) -> Result<Vec<MessageMeta>> {
        // One row for the whole listing: a large maildrop's rows would otherwise each be
        // decoded one by one. The numbers as arrays (binary, no text conversion on either side),
        // the uids as one string. No ORDER BY: `zip_listing` sorts, and the aggregates all see
        // the rows in the same order. With one, statistics not yet updated after a burst of
        // deliveries made the planner sort 50,000 rows on disk (50 ms instead of 15).
        let (ids, sizes, blobs, uids): (
            Option<Vec<i64>>,
            Option<Vec<i64>>,
            Option<Vec<i64>>,
            Option<String>,
        ) = sqlx::query_as(
            "SELECT array_agg(id), array_agg(size), array_agg(blob_id), string_agg(uid, E'\\n')
             FROM messages WHERE user_id = $1",
        )
        .bind(user.0)
        .fetch_one(&self.pool)
        .await?;
        zip_listing(
            &ids.unwrap_or_default(),
            &sizes.unwrap_or_default(),
            &blobs.unwrap_or_default(),
            uids.as_deref().unwrap_or_default(),
        )
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
                .bind(i32::try_from(part - 1).unwrap_or(i32::MAX))
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
        let seq = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let (from, to) = (next - 1, (next - 1).saturating_add(want));
        let rows: Vec<(i32, Vec<u8>)> = sqlx::query_as(
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
        let mut tx = self.pool.begin().await?;
        // Deleting our lease row first also row-locks it: a concurrent takeover waits for this
        // transaction, and a lease already taken over makes this UPDATE change nothing.
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
impl Delivery for PostgresStore {
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
        let id = sqlx::query_scalar("INSERT INTO blobs (pending_node) VALUES ($1) RETURNING id")
            .bind(&self.node)
            .fetch_one(&self.pool)
            .await?;
        Ok(BlobId(id))
    }

    async fn append_chunk(&self, blob: BlobId, seq: u32, data: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
            .bind(blob.0)
            .bind(i32::try_from(seq).map_err(|_| StoreError::Invalid("message too large".into()))?)
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

/// Every parcel of a flush in one round trip: each body is a new blob, or the blob streamed
/// before the delivery (now complete); then its last chunk, each recipient's message, the usage
/// counters and the hour's delivery count. Parcel columns: $1 streamed blob or NULL, $2 size,
/// $3 refs, $4 the tail's chunk number, $5 the tail. $6 the UID prefix. Message columns: $7
/// parcel (1-based), $8 user, $9 header block, $10 size. Usage: $11/$12/$13 user, bytes,
/// messages; $14/$15/$16 domain, bytes, messages.
const STORE_PARCELS: &str = "
    WITH p AS MATERIALIZED (
        SELECT n, size, refs, seq, tail, blob IS NULL AS new,
               COALESCE(blob, nextval('blobs_id_seq')) AS id
        FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::INT[], $5::BYTEA[])
            WITH ORDINALITY AS p(blob, size, refs, seq, tail, n)),
    new_blobs AS (INSERT INTO blobs (id, size, refs) SELECT id, size, refs FROM p WHERE new),
    streamed AS (UPDATE blobs b SET pending_node = NULL, size = p.size, refs = p.refs
                 FROM p WHERE NOT p.new AND b.id = p.id),
    chunks AS (INSERT INTO blob_chunks (blob_id, seq, data)
               SELECT id, seq, tail FROM p WHERE octet_length(tail) > 0),
    user_usage AS (UPDATE users u SET used_bytes = u.used_bytes + t.bytes,
                       used_messages = u.used_messages + t.messages
                   FROM unnest($11::BIGINT[], $12::BIGINT[], $13::BIGINT[]) AS t(id, bytes, messages)
                   WHERE u.id = t.id),
    domain_usage AS (UPDATE domains d SET used_bytes = d.used_bytes + t.bytes,
                         used_messages = d.used_messages + t.messages
                     FROM unnest($14::BIGINT[], $15::BIGINT[], $16::BIGINT[])
                         AS t(id, bytes, messages)
                     WHERE d.id = t.id),
    stats AS (INSERT INTO hourly_stats (hour, domain_id, delivered)
              SELECT floor(extract(epoch FROM clock_timestamp()) / 3600)::BIGINT, id, messages
              FROM unnest($14::BIGINT[], $16::BIGINT[]) AS t(id, messages)
              ON CONFLICT (hour, domain_id)
                  DO UPDATE SET delivered = hourly_stats.delivered + EXCLUDED.delivered)
    INSERT INTO messages (user_id, uid, blob_id, prefix, size)
    SELECT t.user_id, $6 || '.' || nextval('message_uids'), p.id, t.prefix, t.size
    FROM unnest($7::BIGINT[], $8::BIGINT[], $9::BYTEA[], $10::BIGINT[]) WITH ORDINALITY
        AS t(parcel, user_id, prefix, size, k)
    JOIN p ON p.n = t.parcel
    ORDER BY t.k";

/// Stores deliveries, a batch per transaction (see `group`).
struct Writer {
    pool: PgPool,
    /// The store's UID prefix cell.
    uid_prefix: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl Writer {
    /// Locks the recipients' rows and reads their quotas. Concurrent deliveries (from other
    /// frontends) must not both pass a check. Rows are locked in (domain, user) id order, each
    /// domain before its users, so two batches never wait on each other in a cycle. NO KEY
    /// UPDATE, not UPDATE: a lock() inserting rows that reference these (maildrop_locks,
    /// hourly_stats) must not wait on a delivery that may itself wait for lock()'s hourly_stats
    /// row.
    async fn lock_accounts(tx: &mut Transaction<'_, Postgres>, users: &[i64]) -> Result<Accounts> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{ACCOUNT_COLUMNS} WHERE u.id = ANY($1) ORDER BY d.id, u.id FOR NO KEY UPDATE OF d, u"
        )))
        .bind(users)
        .fetch_all(&mut **tx)
        .await?;
        Accounts::from_rows(&rows)
    }

    /// Writes what `pending` holds (`STORE_PARCELS`) and empties it.
    async fn flush(
        pending: &mut Pending<'_>,
        tx: &mut Transaction<'_, Postgres>,
        prefix: &str,
    ) -> Result<()> {
        let p = std::mem::take(pending);
        if !p.blobs.is_empty() {
            let (user_ids, (user_bytes, user_messages)): (Vec<i64>, (Vec<i64>, Vec<i64>)) =
                p.user_usage.into_iter().unzip();
            let (domain_ids, (domain_bytes, domain_messages)): (Vec<i64>, (Vec<i64>, Vec<i64>)) =
                p.domain_usage.into_iter().unzip();
            sqlx::query(STORE_PARCELS)
                .bind(&p.blobs)
                .bind(&p.sizes)
                .bind(&p.refs)
                .bind(&p.seqs)
                .bind(&p.tails)
                .bind(prefix)
                .bind(&p.parcel)
                .bind(&p.users)
                .bind(&p.prefixes)
                .bind(&p.message_sizes)
                .bind(&user_ids)
                .bind(&user_bytes)
                .bind(&user_messages)
                .bind(&domain_ids)
                .bind(&domain_bytes)
                .bind(&domain_messages)
                .execute(&mut **tx)
                .await?;
        }
        if !p.unused_blobs.is_empty() {
            sqlx::query("DELETE FROM blobs WHERE id = ANY($1)")
                .bind(&p.unused_blobs)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl BatchWriter for Writer {
    #[instrument(skip_all, fields(parcels = parcels.len()))]
    async fn write_batch(&self, parcels: &[Parcel]) -> Result<Vec<Outcomes>> {
        let mut tx = self.pool.begin().await?;
        let users: Vec<i64> = parcels
            .iter()
            .flat_map(|p| p.recipients.iter().map(|r| r.user.0))
            .collect();
        let mut accounts = Writer::lock_accounts(&mut tx, &users).await?;
        let prefix = PostgresStore::prefix(&self.uid_prefix, &mut tx).await?;
        // Quotas are checked here, one delivery after the other against the usage the batch
        // has reached; the rows stay locked until the commit.
        let mut pending = Pending::default();
        let mut all = Vec::with_capacity(parcels.len());
        for parcel in parcels {
            let (outcomes, warn) = pending.add(parcel, &mut accounts)?;
            // A user with a quota of their own may be due a warning, which is itself a message
            // counted in the usage: write what is decided, warn, and read the usage again.
            if !warn.is_empty() {
                Writer::flush(&mut pending, &mut tx, &prefix).await?;
                for user in warn {
                    PostgresStore::quota_warning(&mut tx, user, &prefix).await?;
                }
                accounts = Writer::lock_accounts(&mut tx, &users).await?;
            }
            all.push(outcomes);
        }
        Writer::flush(&mut pending, &mut tx, &prefix).await?;
        tx.commit().await?;
        Ok(all)
    }
}

/// A scope as SQL parameters: whether it is `All`, and otherwise its domains for `= ANY`.
fn scope_binds(scope: &Scope) -> (bool, Vec<String>) {
    match scope {
        Scope::All => (true, Vec::new()),
        Scope::Domains(list) => (false, list.iter().map(|d| d.to_string()).collect()),
    }
}

/// The columns `domain_row` reads, from `domains d`.
/// Names sort by `COLLATE "C"` here and below: byte order, as SQLite sorts, whatever the
/// database's locale.
const DOMAIN_COLUMNS: &str = "d.name, d.quota_bytes, d.quota_messages, d.used_bytes,
    d.used_messages, (SELECT count(*) FROM users u WHERE u.domain_id = d.id), d.max_users,
    d.login_forms, d.allow_apop, d.enabled,
    coalesce((SELECT array_agg(a.alias ORDER BY a.alias COLLATE \"C\") FROM domain_aliases a
              WHERE a.domain_id = d.id), '{}')";

fn domain_row(r: &sqlx::postgres::PgRow) -> Result<DomainDetail> {
    let aliases: Vec<String> = r.try_get(10)?;
    let aliases = aliases
        .iter()
        .map(|a| DomainName::parse(a))
        .collect::<Result<Vec<_>>>()?;
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
    u.used_messages, u.enabled,
    floor(extract(epoch FROM u.created_at) * 1000)::BIGINT";

fn user_row(r: &sqlx::postgres::PgRow, domain: &DomainName) -> Result<UserDetail> {
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

impl PostgresStore {
    /// An admin row (`id, email, password_hash, is_super`) with its scope.
    async fn admin_account(
        &self,
        row: Option<sqlx::postgres::PgRow>,
    ) -> Result<Option<AdminAccount>> {
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.try_get(0)?;
        let scope = if row.try_get(3)? {
            Scope::All
        } else {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT d.name FROM admin_domains a JOIN domains d ON d.id = a.domain_id
                 WHERE a.admin_id = $1 ORDER BY d.name COLLATE \"C\"",
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
impl Admin for PostgresStore {
    #[instrument(skip_all, fields(admin = %email))]
    async fn add_admin(&self, email: &str, password_hash: &str, scope: &Scope) -> Result<AdminId> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO admins (email, password_hash, is_super, created_at)
             VALUES ($1, $2, $3, floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT)
             RETURNING id",
        )
        .bind(email)
        .bind(password_hash)
        .bind(scope.is_all())
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
        let filter = "($1 OR d.name = ANY($2))
                      AND strpos(lower(d.name), lower($3)) > 0";
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
             ORDER BY d.name COLLATE \"C\" LIMIT $4 OFFSET $5"
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
        let mut tx = self.pool.begin().await?;
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
        let filter = "u.domain_id = $1 AND strpos(lower(u.localpart), lower($2)) > 0";
        let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM users u WHERE {filter}"
        )))
        .bind(domain_id)
        .bind(search)
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE {filter}
             ORDER BY u.localpart COLLATE \"C\" LIMIT $3 OFFSET $4"
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
        let mut tx = self.pool.begin().await?;
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
            "SELECT u.localpart, d.name, l.node,
                    floor(extract(epoch FROM l.locked_at) * 1000)::BIGINT
             FROM maildrop_locks l JOIN users u ON u.id = l.user_id
                  JOIN domains d ON d.id = u.domain_id
             WHERE l.expires_at > clock_timestamp() AND ($1 OR d.name = ANY($2))
             ORDER BY d.name COLLATE \"C\", u.localpart COLLATE \"C\"",
        )
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
             VALUES (floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT,
                     $1, $2, $3, $4, $5, $6, $7, $8)",
        )
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
        let cond = "($1 OR domain = ANY($2))
                    AND strpos(lower(actor), lower($3)) > 0
                    AND strpos(lower(action), lower($4)) > 0
                    AND strpos(lower(object), lower($5)) > 0";
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
            "SELECT h.hour, sum(h.delivered)::BIGINT, sum(h.logins)::BIGINT
             FROM hourly_stats h JOIN domains d ON d.id = h.domain_id
             WHERE h.hour >= $1 AND ($2 OR d.name = ANY($3))
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
                    (SELECT count(*) FROM users u WHERE u.domain_id IN
                         (SELECT id FROM domains WHERE $1 OR name = ANY($2))),
                    coalesce(sum(d.used_bytes), 0)::BIGINT,
                    coalesce(sum(d.used_messages), 0)::BIGINT,
                    coalesce(sum(d.quota_bytes), 0)::BIGINT, count(d.quota_bytes)
             FROM domains d
             WHERE $1 OR d.name = ANY($2)",
        )
        .bind(all)
        .bind(&list)
        .fetch_one(&mut *tx)
        .await?;
        let sessions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM maildrop_locks l JOIN users u ON u.id = l.user_id
                  JOIN domains d ON d.id = u.domain_id
             WHERE l.expires_at > clock_timestamp() AND ($1 OR d.name = ANY($2))",
        )
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
impl Policies for PostgresStore {
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
                .try_get::<Option<i32>, _>(1)?
                .and_then(|p| u8::try_from(p).ok()),
            retention_days: row
                .try_get::<Option<i32>, _>(2)?
                .and_then(|d| u32::try_from(d).ok()),
            login_delay_secs: row
                .try_get::<Option<i32>, _>(3)?
                .and_then(|d| u32::try_from(d).ok()),
        })
    }

    #[instrument(skip_all, fields(domain = %domain))]
    async fn set_domain_policies(&self, domain: &DomainName, p: &DomainPolicies) -> Result<()> {
        p.validate()?;
        let int = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
        let updated = sqlx::query(
            "UPDATE domains SET quota_tempfail = $1, quota_warn_percent = $2, retention_days = $3,
                                login_delay_secs = $4
             WHERE name = $5",
        )
        .bind(p.quota_tempfail)
        .bind(p.quota_warn_percent.map(i32::from))
        .bind(int(p.retention_days))
        .bind(int(p.login_delay_secs))
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
                .try_get::<Option<i32>, _>(0)?
                .and_then(|d| u32::try_from(d).ok()),
            login_delay_secs: row
                .try_get::<Option<i32>, _>(1)?
                .and_then(|d| u32::try_from(d).ok()),
        })
    }

    async fn policy_summary(&self) -> Result<PolicySummary> {
        let row = sqlx::query(POLICY_SUMMARY).fetch_one(&self.pool).await?;
        let min = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
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
        let batch = batch.max(1);
        loop {
            let mut tx = self.pool.begin().await?;
            // SKIP LOCKED: another frontend's job (or a QUIT deleting them) has these rows;
            // this run takes the next ones instead of waiting or deleting them twice.
            let rows = sqlx::query(
                "SELECT m.id, m.user_id FROM messages m
                 JOIN users u ON u.id = m.user_id JOIN domains d ON d.id = u.domain_id
                 WHERE d.retention_days IS NOT NULL
                   AND m.delivered_at < to_timestamp($1::FLOAT8 / 1000)
                                        - make_interval(days => d.retention_days)
                   AND NOT EXISTS (SELECT 1 FROM maildrop_locks l
                                   WHERE l.user_id = m.user_id AND l.expires_at >= clock_timestamp())
                 ORDER BY m.id LIMIT $2
                 FOR UPDATE OF m SKIP LOCKED",
            )
            .bind(now)
            .bind(i64::from(batch))
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
            let users: Vec<i64> = per_user.keys().copied().collect();
            // Domains, then users, in id order, as deliveries lock them. FOR UPDATE on users
            // (not NO KEY UPDATE) also holds off a login's lease insert until this commits;
            // a login that got in before it is seen by the re-check below.
            sqlx::query(
                "SELECT id FROM domains WHERE id IN (SELECT domain_id FROM users WHERE id = ANY($1))
                 ORDER BY id FOR NO KEY UPDATE",
            )
            .bind(&users)
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&users)
                .execute(&mut *tx)
                .await?;
            let locked: Vec<i64> = sqlx::query_scalar(
                "SELECT user_id FROM maildrop_locks
                 WHERE user_id = ANY($1) AND expires_at >= clock_timestamp()",
            )
            .bind(&users)
            .fetch_all(&mut *tx)
            .await?;
            let mut deleted = 0u64;
            for (user, ids) in &per_user {
                if locked.contains(user) {
                    continue;
                }
                Self::delete_messages(&mut tx, *user, ids).await?;
                deleted += ids.len() as u64;
            }
            tx.commit().await?;
            report.batches += 1;
            report.deleted += deleted;
            if found < batch as usize || deleted == 0 {
                return Ok(report);
            }
        }
    }

    #[instrument(skip_all, fields(user = user.0, messages = messages.len()))]
    async fn import(&self, user: UserId, messages: &[ImportMessage]) -> Result<Vec<ImportOutcome>> {
        let mut tx = self.pool.begin().await?;
        let prefix = Self::prefix(&self.uid_prefix, &mut tx).await?;
        // Domain then user, as deliveries lock them: usage counters stay exact, and two imports
        // into one mailbox run one after the other.
        let domain: Option<i64> = sqlx::query_scalar("SELECT domain_id FROM users WHERE id = $1")
            .bind(user.0)
            .fetch_optional(&mut *tx)
            .await?;
        let domain = domain.ok_or_else(|| StoreError::NotFound("user".into()))?;
        sqlx::query("SELECT id FROM domains WHERE id = $1 FOR NO KEY UPDATE")
            .bind(domain)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
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
                    // Keep the sequence past an id of our own form, so new mail never collides.
                    if let Some(n) = own_uid_number(uid, &prefix) {
                        sqlx::query(
                            "SELECT setval('message_uids', $1)
                             WHERE $1 > (SELECT last_value FROM message_uids)",
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
            Self::insert_whole_message(&mut tx, user.0, uid, &m.data, Some(&m.key)).await?;
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

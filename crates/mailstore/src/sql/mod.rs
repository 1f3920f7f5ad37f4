//! The one SQL implementation of the store's roles, generic over a [`Dialect`]: SQLite
//! (`sqlite.rs`) and Postgres (`postgres.rs`) supply the SQL fragments that are spelled
//! differently and the few operations that really work differently (opening, the maildrop lock,
//! the listing, login counting, the delivery writer's flush, retention); everything else is
//! written here once.
//!
//! Every `impl` below carries the same `where` clause: the sqlx types the shared SQL binds and
//! reads. Rust does not carry such bounds along with `D: Dialect`, so each block states them.

mod activity;
mod admin;
mod alarm;
mod app_password;
mod bin;
mod bulk;
mod bulletin;
mod dedup;
mod directory;
mod maildrops;
mod oauth;
mod policies;
mod self_service;
mod trace;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row,
    Transaction, Type,
};
use tokio::sync::OnceCell;
use tracing::instrument;

use crate::batch::{Accounts, Pending};
use crate::convert::*;
use crate::group::{BatchWriter, GroupCommit, Outcomes};
use crate::held::Held;
use crate::*;
pub(crate) use bin::Deleting;
pub(crate) use dedup::Claims;

/// A Rust type the shared SQL binds and reads as a column value.
pub trait Column<D: Database>: Type<D> + for<'q> Encode<'q, D> + for<'r> Decode<'r, D> {}
impl<D: Database, T: Type<D> + for<'q> Encode<'q, D> + for<'r> Decode<'r, D>> Column<D> for T {}

/// How many rows a statement changed (each driver has its own result type).
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// What differs between the backends. The constants are SQL fragments the shared statements
/// splice in; the functions are the operations each backend implements its own way.
#[async_trait]
pub trait Dialect:
    Database<
        Arguments: IntoArguments<Self>,
        Connection: sqlx::migrate::Migrate,
        QueryResult: RowsAffected,
    > + Sized
{
    /// Appended to a `SELECT` of rows the transaction goes on to change: Postgres row-locks
    /// them; on SQLite the write transaction already holds the database's one write lock.
    const LOCK_ROWS: &'static str;
    /// The current time as the `*_at` columns hold it (Unix ms on SQLite, a timestamp on
    /// Postgres), and in Unix milliseconds.
    const NOW: &'static str;
    const NOW_MS: &'static str;
    /// Sorts names byte by byte, whatever the database's locale.
    const BYTEWISE: &'static str;
    /// `FIND(haystack, needle)`: 1-based position of `needle`, 0 if absent.
    const FIND: &'static str;
    /// `CONCAT(text, separator)`: the group's values joined.
    const CONCAT: &'static str;
    /// `x IN (SELECT EACH($n))`: the members of a list bound as [`Dialect::Ids`] or
    /// [`Dialect::Names`].
    const EACH: &'static str;
    /// Takes the next UID number.
    const NEXT_UID: &'static str;
    /// Keeps the UID counter at or past `$1` (an imported UID of our own form).
    const RAISE_UID: &'static str;
    /// A list of ids or of names as one bind parameter.
    type Ids: for<'q> Encode<'q, Self> + Type<Self> + Send;
    type Names: for<'q> Encode<'q, Self> + Type<Self> + Send + Sync;

    fn ids(ids: &[i64]) -> Self::Ids;
    fn names<'a>(names: impl Iterator<Item = &'a str>) -> Self::Names;
    /// A `*_at` column as Unix milliseconds.
    fn millis(column: &str) -> String;
    /// The time `ms` (an SQL expression) milliseconds from now, as `*_at` columns hold it.
    fn after(ms: &str) -> String;

    /// A transaction that will write.
    async fn begin_write(pool: &Pool<Self>) -> Result<Transaction<'static, Self>>;
    async fn recover(store: &SqlStore<Self>, me: &Claimant) -> Result<()>;
    async fn heartbeat(store: &SqlStore<Self>) -> Result<()>;
    async fn leave(store: &SqlStore<Self>) -> Result<()>;
    /// Takes the maildrop lock; with `login`, records the successful login in the same
    /// transaction (see `Maildrops::lock_for_login`).
    async fn lock(
        store: &SqlStore<Self>,
        user: UserId,
        login: Option<&LoginRecord>,
    ) -> Result<Lease>;
    async fn list(store: &SqlStore<Self>, user: UserId) -> Result<Vec<MessageMeta>>;
    async fn count_auth_attempt(
        store: &SqlStore<Self>,
        attempt: &AuthAttempt,
        window: Duration,
    ) -> Result<Vec<u64>>;
    async fn expire(store: &SqlStore<Self>, now: i64, batch: u32) -> Result<ExpireReport>;
    /// Writes a batch's deliveries.
    async fn flush(batch: Pending<'_>, tx: &mut Transaction<'_, Self>, prefix: &str) -> Result<()>;
}

/// `D`'s statement with the dialect's fragments spliced in for `{lock_rows}`, `{now}`,
/// `{now_ms}`, `{bytewise}`, `{find}`, `{each}` and `{concat}`.
pub(crate) fn sql<D: Dialect>(template: &str) -> AssertSqlSafe<String> {
    let mut statement = template.to_string();
    for (token, fragment) in [
        ("{lock_rows}", D::LOCK_ROWS),
        ("{now}", D::NOW),
        ("{now_ms}", D::NOW_MS),
        ("{bytewise}", D::BYTEWISE),
        ("{find}", D::FIND),
        ("{each}", D::EACH),
        ("{concat}", D::CONCAT),
    ] {
        // Most statements hold one or two tokens: only those are copied again.
        if statement.contains(token) {
            statement = statement.replace(token, fragment);
        }
    }
    AssertSqlSafe(statement)
}

/// The store on one SQL database: every role the frontends use.
pub struct SqlStore<D: Dialect> {
    pub(crate) pool: Pool<D>,
    /// Connections for the lease bookkeeping of a session that changes no mail (taking and
    /// giving back a maildrop lock, with the login's records): writes a power loss may lose,
    /// since every session dies with the machine anyway. SQLite commits them without waiting
    /// for the disk (see `SqliteStore::open`). On Postgres it is `pool`: a frontend outlives a
    /// Postgres failover, and its lease must survive the promotion.
    pub(crate) soft: Pool<D>,
    pub(crate) node: String,
    /// Distinguishes this run of the node from its crashed predecessors.
    pub(crate) incarnation: String,
    /// This server, once `recover` claimed the node for it (Postgres).
    pub(crate) claimant: OnceLock<Claimant>,
    pub(crate) held: Held,
    /// The install's UID prefix (see the first migration).
    uid_prefix: Arc<OnceCell<String>>,
    pub(crate) ttl: Duration,
    pub(crate) clock: LeaseClock,
    deliveries: GroupCommit,
}

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
    /// The id of `domain` once it has room for `adding` more users, its row locked until the
    /// transaction ends, so concurrent additions cannot both pass the user limit.
    pub(crate) async fn domain_with_room(
        tx: &mut Transaction<'_, D>,
        domain: &DomainName,
        adding: usize,
    ) -> Result<i64> {
        let row = sqlx::query(sql::<D>(
            "SELECT id, max_users FROM domains WHERE name = $1 {lock_rows}",
        ))
        .bind(domain.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("domain {domain}")))?;
        let (id, max): (i64, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(max) = max {
            let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE domain_id = $1")
                .bind(id)
                .fetch_one(&mut **tx)
                .await?;
            if users.saturating_add(i64::try_from(adding).unwrap_or(i64::MAX)) > max {
                return Err(StoreError::Conflict(if adding == 1 {
                    format!("domain {domain} has reached its limit of {max} users")
                } else {
                    format!(
                        "domain {domain} has {users} users; {adding} more would pass its limit of {max}"
                    )
                }));
            }
        }
        Ok(id)
    }

    /// Milliseconds from now to `ttl` from now, by the lease clock (see `LeaseClock`).
    pub(crate) fn lease_end_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 4) + self.clock.offset_ms()
    }

    /// The store on an open pool; with `migrations`, the schema is brought up to date first.
    pub(crate) async fn with_pool(
        pool: Pool<D>,
        soft: Pool<D>,
        lock: LockOptions,
        migrations: Option<&sqlx::migrate::Migrator>,
    ) -> Result<Self> {
        if let Some(migrator) = migrations {
            migrator
                .run(&pool)
                .await
                .map_err(|e| StoreError::Unavailable(e.into()))?;
        }
        let uid_prefix = Arc::new(OnceCell::new());
        Ok(Self {
            node: lock.node,
            incarnation: incarnation(),
            claimant: OnceLock::new(),
            held: Held::default(),
            ttl: lock.ttl,
            clock: lock.clock,
            deliveries: GroupCommit::start(Writer {
                pool: pool.clone(),
                uid_prefix: uid_prefix.clone(),
            }),
            pool,
            soft,
            uid_prefix,
        })
    }

    /// The connection pool's size and idle connections now (for the metrics).
    pub fn pool_usage(&self) -> PoolUsage {
        PoolUsage {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
        }
    }

    /// Deletes the lease's lock row; false when the lease was no longer held (expired and taken
    /// over, or broken by an admin).
    async fn release(&self, lease: &Lease) -> Result<bool> {
        let rows = sqlx::query("DELETE FROM maildrop_locks WHERE user_id = $1 AND token = $2")
            .bind(lease.user.0)
            .bind(lease.token)
            .execute(&self.soft)
            .await?
            .rows_affected();
        Ok(rows > 0)
    }

    /// Frees every maildrop lock this node's previous runs held and drops the bodies they were
    /// still writing; `recover`'s work once the node is this server's.
    pub(crate) async fn free_previous_run(&self, tx: &mut Transaction<'_, D>) -> Result<()> {
        let locks = sqlx::query("DELETE FROM maildrop_locks WHERE node = $1 AND incarnation <> $2")
            .bind(&self.node)
            .bind(&self.incarnation)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        let blobs = sqlx::query("DELETE FROM blobs WHERE pending_node = $1")
            .bind(&self.node)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        tracing::info!(locks, blobs, "recovered from previous run");
        Ok(())
    }

    pub(crate) async fn domain_id(tx: &mut Transaction<'_, D>, name: &DomainName) -> Result<i64> {
        sqlx::query_scalar("SELECT id FROM domains WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("domain {name}")))
    }

    async fn user_id(tx: &mut Transaction<'_, D>, address: &Address) -> Result<i64> {
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

    /// Row-locks a domain (Postgres; see `Dialect::LOCK_ROWS`), then the rows of `users` in id
    /// order: the order deliveries lock them in, so the two never wait on each other in a cycle.
    pub(crate) async fn lock_rows(
        tx: &mut Transaction<'_, D>,
        domain: i64,
        users: &[i64],
    ) -> Result<()> {
        if D::LOCK_ROWS.is_empty() {
            return Ok(());
        }
        sqlx::query(sql::<D>("SELECT id FROM domains WHERE id = $1 {lock_rows}"))
            .bind(domain)
            .execute(&mut **tx)
            .await?;
        if !users.is_empty() {
            sqlx::query(sql::<D>(
                "SELECT id FROM users WHERE id IN (SELECT {each}($1)) ORDER BY id {lock_rows}",
            ))
            .bind(D::ids(users))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Deletes messages of one user, keeping usage counters and blob reference counts exact;
    /// returns what went. Unless `Deleting::Forever`, they go into the recycle bin when their
    /// domain keeps one (see `bin`): their bodies stay referenced, and they leave the usage
    /// counters only if the domain does not count the bin.
    pub(crate) async fn delete_messages(
        tx: &mut Transaction<'_, D>,
        user: i64,
        ids: &[MessageId],
        how: bin::Deleting<'_>,
    ) -> Result<Transfer> {
        let ids: Vec<i64> = ids.iter().map(|m| m.0).collect();
        let binned = Self::bin_messages(tx, user, &ids, how).await?;
        let gone: Vec<(i64, i64)> = sqlx::query_as(sql::<D>(
            "DELETE FROM messages WHERE user_id = $1 AND id IN (SELECT {each}($2))
             RETURNING size, blob_id",
        ))
        .bind(user)
        .bind(D::ids(&ids))
        .fetch_all(&mut **tx)
        .await?;
        let bytes: i64 = gone.iter().map(|(size, _)| size).sum();
        let transfer = Transfer {
            messages: gone.len() as u64,
            octets: to_u64(bytes),
        };
        match binned {
            Some(true) => return Ok(transfer),
            Some(false) => {}
            None => Self::drop_blob_refs(tx, gone.iter().map(|(_, blob)| *blob)).await?,
        }
        Self::add_usage(tx, user, -bytes, -to_i64(gone.len() as u64)).await?;
        Ok(transfer)
    }

    /// Drops one body reference per item (a blob may come several times), and the bodies no
    /// message or bin entry refers to any more.
    async fn drop_blob_refs(
        tx: &mut Transaction<'_, D>,
        gone: impl Iterator<Item = i64>,
    ) -> Result<()> {
        let mut per_blob = std::collections::BTreeMap::<i64, i64>::new();
        for blob in gone {
            *per_blob.entry(blob).or_default() += 1;
        }
        // One statement per distinct count (nearly always one: a body each message).
        let mut by_count = std::collections::BTreeMap::<i64, Vec<i64>>::new();
        for (blob, n) in per_blob {
            by_count.entry(n).or_default().push(blob);
        }
        for (n, blobs) in &by_count {
            sqlx::query(sql::<D>(
                "UPDATE blobs SET refs = refs - $1 WHERE id IN (SELECT {each}($2))",
            ))
            .bind(n)
            .bind(D::ids(blobs))
            .execute(&mut **tx)
            .await?;
        }
        let blobs: Vec<i64> = by_count.into_values().flatten().collect();
        sqlx::query(sql::<D>(
            "DELETE FROM blobs WHERE id IN (SELECT {each}($1)) AND refs <= 0",
        ))
        .bind(D::ids(&blobs))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Adds to a user's and their domain's usage counters.
    async fn add_usage(
        tx: &mut Transaction<'_, D>,
        user: i64,
        bytes: i64,
        messages: i64,
    ) -> Result<()> {
        // Constant statements, not one built per call: this runs for every UPDATE that deletes.
        for statement in [
            "UPDATE users SET used_bytes = used_bytes + $1, used_messages = used_messages + $2
             WHERE id = $3",
            "UPDATE domains SET used_bytes = used_bytes + $1, used_messages = used_messages + $2
             WHERE id = (SELECT domain_id FROM users WHERE id = $3)",
        ] {
            sqlx::query(statement)
                .bind(bytes)
                .bind(messages)
                .bind(user)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn remove_user_in(tx: &mut Transaction<'_, D>, user: i64) -> Result<()> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM messages WHERE user_id = $1")
            .bind(user)
            .fetch_all(&mut **tx)
            .await?;
        let ids: Vec<MessageId> = ids.into_iter().map(MessageId).collect();
        Self::delete_messages(tx, user, &ids, bin::Deleting::Forever).await?;
        Self::purge_whole_bin(tx, user).await?;
        for statement in [
            "DELETE FROM maildrop_locks WHERE user_id = $1",
            "DELETE FROM users WHERE id = $1",
        ] {
            sqlx::query(statement).bind(user).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// The install's UID prefix, read once.
    async fn prefix(cell: &OnceCell<String>, tx: &mut Transaction<'_, D>) -> Result<String> {
        Ok(cell
            .get_or_try_init(|| async {
                sqlx::query_scalar::<_, String>("SELECT value FROM meta WHERE key = 'uid_prefix'")
                    .fetch_one(&mut **tx)
                    .await
            })
            .await?
            .clone())
    }

    async fn next_uid(tx: &mut Transaction<'_, D>, prefix: &str) -> Result<String> {
        let n: i64 = sqlx::query_scalar(D::NEXT_UID).fetch_one(&mut **tx).await?;
        Ok(format!("{prefix}.{n}"))
    }

    /// Stores a whole message (no per-recipient header block) for one user, with its own
    /// body, counting it in the user's and the domain's usage. For imports and notices.
    async fn insert_whole_message(
        tx: &mut Transaction<'_, D>,
        user: i64,
        uid: &str,
        data: &[u8],
        import_key: Option<&str>,
    ) -> Result<()> {
        let size = to_i64(data.len() as u64);
        let blob: i64 = sqlx::query_scalar(sql::<D>(
            "INSERT INTO blobs (size, refs, created_at) VALUES ($1, 1, {now}) RETURNING id",
        ))
        .bind(size)
        .fetch_one(&mut **tx)
        .await?;
        for (seq, chunk) in data.chunks(CHUNK_SIZE).enumerate() {
            sqlx::query("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
                .bind(blob)
                .bind(chunk_number(seq)?)
                .bind(chunk.to_vec())
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query(sql::<D>(
            "INSERT INTO messages (user_id, uid, blob_id, prefix, size, delivered_at, import_key)
             VALUES ($1, $2, $3, $4, $5, {now}, $6)",
        ))
        .bind(user)
        .bind(uid)
        .bind(blob)
        .bind(Vec::<u8>::new())
        .bind(size)
        .bind(import_key.map(str::to_string))
        .execute(&mut **tx)
        .await?;
        Self::add_usage(tx, user, size, 1).await
    }

    /// After a delivery to `user` (whose rows the delivery has locked): sends the one-time
    /// warning when usage crossed the domain's threshold, and re-arms it when usage is back
    /// below. The notice is stored only if it fits the quotas: a warning never takes a mailbox
    /// over its limit.
    async fn quota_warning(tx: &mut Transaction<'_, D>, user: i64, prefix: &str) -> Result<()> {
        let r = sqlx::query(sql::<D>(
            "SELECT u.quota_bytes, u.quota_messages, u.used_bytes, u.used_messages,
                    u.quota_warned, CAST(d.quota_warn_percent AS BIGINT), u.localpart, d.name,
                    d.quota_bytes, d.quota_messages, d.used_bytes, d.used_messages, {now_ms}
             FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.id = $1",
        ))
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
        let now: i64 = r.try_get(12)?;
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
            Self::insert_whole_message(tx, user, &uid, &notice, None).await?;
        }
        Ok(())
    }

    /// Reads the quotas and usage of a batch's recipients. On Postgres it also locks their rows,
    /// so concurrent deliveries (from other frontends) cannot both pass a check: in (domain,
    /// user) id order, each domain before its users, so two batches never wait on each other in
    /// a cycle; NO KEY UPDATE, not UPDATE, so a lock() inserting rows that reference these
    /// (maildrop_locks, hourly_stats) does not wait on a delivery that may itself wait for
    /// lock()'s hourly_stats row.
    async fn lock_accounts(tx: &mut Transaction<'_, D>, users: &[i64]) -> Result<Accounts> {
        let of = if D::LOCK_ROWS.is_empty() {
            ""
        } else {
            "OF d, u"
        };
        // The columns in the order `Accounts::from_rows` reads them.
        let rows = sqlx::query(sql::<D>(&format!(
            "SELECT u.id, u.domain_id,
                    u.quota_warned OR u.quota_bytes IS NOT NULL OR u.quota_messages IS NOT NULL,
                    u.quota_bytes, u.quota_messages, u.used_bytes, u.used_messages,
                    d.quota_tempfail, d.quota_bytes, d.quota_messages, d.used_bytes, d.used_messages
             FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE u.id IN (SELECT {{each}}($1))
             ORDER BY d.id, u.id {{lock_rows}} {of}"
        )))
        .bind(D::ids(users))
        .fetch_all(&mut **tx)
        .await?;
        Accounts::from_rows(&rows)
    }

    /// Refuses quotas where a user's limit is larger than their domain's. The caller holds the
    /// domain row locked, so concurrent quota changes are checked one after the other.
    async fn check_quota_nesting(tx: &mut Transaction<'_, D>, domain: i64) -> Result<()> {
        let (users, bytes, messages): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*),
                 count(CASE WHEN u.quota_bytes > d.quota_bytes THEN 1 END),
                 count(CASE WHEN u.quota_messages > d.quota_messages THEN 1 END)
             FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE d.id = $1
               AND ((d.quota_bytes IS NOT NULL AND u.quota_bytes > d.quota_bytes)
                 OR (d.quota_messages IS NOT NULL AND u.quota_messages > d.quota_messages))",
        )
        .bind(domain)
        .fetch_one(&mut **tx)
        .await?;
        if users > 0 {
            return Err(StoreError::QuotaOutsideDomain {
                users: to_u64(users),
                bytes: bytes > 0,
                messages: messages > 0,
            });
        }
        Ok(())
    }
}

/// Stores deliveries, a batch per transaction (see `group`).
pub(crate) struct Writer<D: Dialect> {
    pool: Pool<D>,
    /// The store's UID prefix cell.
    uid_prefix: Arc<OnceCell<String>>,
}

#[async_trait]
impl<D: Dialect> BatchWriter for Writer<D>
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
    #[instrument(skip_all, fields(parcels = parcels.len()))]
    async fn write_batch(&self, parcels: &[Parcel]) -> Result<Vec<Outcomes>> {
        let mut tx = D::begin_write(&self.pool).await?;
        let prefix = SqlStore::<D>::prefix(&self.uid_prefix, &mut tx).await?;
        let users: Vec<i64> = parcels
            .iter()
            .flat_map(|p| p.recipients.iter().map(|r| r.user.0))
            .collect();
        let mut accounts = SqlStore::<D>::lock_accounts(&mut tx, &users).await?;
        // Under the recipients' row locks: see `dedup`.
        let mut claims = SqlStore::<D>::claim(&mut tx, parcels, &accounts).await?;
        // Quotas are checked here, one delivery after the other against the usage the batch
        // has reached (see `batch`).
        let mut pending = Pending::default();
        let mut all = Vec::with_capacity(parcels.len());
        for parcel in parcels {
            let (outcomes, warn) = pending.add(parcel, &mut accounts, &mut claims)?;
            // A user with a quota of their own may be due a warning, which is itself a message
            // counted in the usage: write what is decided, warn, and read the usage again.
            if !warn.is_empty() {
                D::flush(std::mem::take(&mut pending), &mut tx, &prefix).await?;
                for user in warn {
                    SqlStore::<D>::quota_warning(&mut tx, user, &prefix).await?;
                }
                accounts = SqlStore::<D>::lock_accounts(&mut tx, &users).await?;
            }
            all.push(outcomes);
        }
        D::flush(std::mem::take(&mut pending), &mut tx, &prefix).await?;
        SqlStore::<D>::release_claims(&mut tx, claims).await?;
        tx.commit().await?;
        Ok(all)
    }
}

/// A scope as SQL parameters: whether it is `All`, and otherwise its domains.
fn scope_binds<D: Dialect>(scope: &Scope) -> (bool, D::Names) {
    match scope {
        Scope::All => (true, D::names(std::iter::empty())),
        Scope::Domains(list) => (false, D::names(list.iter().map(DomainName::as_str))),
    }
}

/// A chunk number to read: `seq` is an INT column (bound as BIGINT), and a part past its range
/// is past the end.
fn seq(n: u32) -> i64 {
    i64::from(n.min(i32::MAX as u32))
}

/// A chunk number to write.
fn chunk_number(n: impl TryInto<i32>) -> Result<i64> {
    n.try_into()
        .map(i64::from)
        .map_err(|_| StoreError::Invalid("message too large".into()))
}

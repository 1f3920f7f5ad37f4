//! The production backend: Postgres, shared by many stateless frontends. Lease times come from
//! the database clock, so frontends with skewed clocks agree on expiry. Counters that every
//! delivery needs (UIDs, lock tokens) are sequences, not rows, so deliveries do not queue on
//! one hot row. `synchronous_commit` is forced on for every connection: a delivery or UPDATE
//! is on disk before its reply.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Pool, Postgres, Row, Transaction};

use crate::batch::Pending;
use crate::convert::*;
use crate::sql::{Dialect, SqlStore};
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

pub type PostgresStore = SqlStore<Postgres>;

impl SqlStore<Postgres> {
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
        Self::with_pool(pool.clone(), pool, lock, migrate.then_some(&MIGRATOR)).await
    }

    /// `recover`'s one transaction: claims the node (see `Maildrops::recover`) and frees what
    /// its previous run left; or, changing nothing, returns the live-looking claim in the way.
    async fn claim_and_recover(&self, me: &Claimant) -> Result<Option<NodeHolder>> {
        let mut tx = self.pool.begin().await?;
        let update = "SET incarnation = EXCLUDED.incarnation, serve_lock = EXCLUDED.serve_lock,
                host = EXCLUDED.host, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,
                renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at
            WHERE n.expires_at < clock_timestamp() OR n.serve_lock = EXCLUDED.serve_lock
               OR n.incarnation = EXCLUDED.incarnation";
        if !self.claim_node(me, update, &mut *tx).await? {
            // The upsert row-locked the claim in the way: it is read as it stands.
            let holder = self.node_holder(&mut *tx).await?;
            tx.rollback().await?;
            return Ok(Some(holder.ok_or_else(|| {
                StoreError::Invalid("node claim vanished while being read".into())
            })?));
        }
        self.free_previous_run(&mut tx).await?;
        tx.commit().await?;
        Ok(None)
    }

    /// Claims this store's node for `me` (`CLAIM_NODE` completed by `update`): whether it did.
    async fn claim_node<'e>(
        &self,
        me: &Claimant,
        update: &str,
        db: impl sqlx::PgExecutor<'e>,
    ) -> Result<bool> {
        let claimed = sqlx::query(AssertSqlSafe(format!("{CLAIM_NODE} {update} RETURNING 1")))
            .bind(&self.node)
            .bind(&self.incarnation)
            .bind(&me.serve_lock)
            .bind(&me.host)
            .bind(i64::from(std::process::id()))
            .bind(self.ttl.as_secs_f64())
            .fetch_optional(db)
            .await?;
        Ok(claimed.is_some())
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
}

/// `lock`'s one statement (see there); `{now}` is the lease clock, `$5` its offset in ms.
static LOCK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    "WITH me AS (
         SELECT u.id, extract(epoch FROM (u.last_login_at
                    + make_interval(secs => d.login_delay_secs) - {now}))::FLOAT8
                    AS wait
         FROM users u JOIN domains d ON d.id = u.domain_id
         WHERE u.id = $1
         FOR NO KEY UPDATE OF u
     ), taken AS (
         INSERT INTO maildrop_locks (user_id, node, incarnation, token, expires_at, locked_at)
         SELECT me.id, $2, $3, nextval('lock_tokens'),
                {now} + make_interval(secs => $4), {now}
         FROM me WHERE coalesce(me.wait, 0) <= 0
         ON CONFLICT (user_id) DO UPDATE
             SET node = EXCLUDED.node, incarnation = EXCLUDED.incarnation,
                 token = EXCLUDED.token, expires_at = EXCLUDED.expires_at,
                 locked_at = EXCLUDED.locked_at
             WHERE maildrop_locks.expires_at < {now}
         RETURNING token, user_id, locked_at
     ), logged AS (
         INSERT INTO login_events (user_id, domain_id, at, ip, mechanism, tls, success, token)
         SELECT taken.user_id, u.domain_id,
                floor(extract(epoch FROM taken.locked_at) * 1000)::BIGINT,
                $7, $8, $9, true, taken.token
         FROM taken JOIN users u ON u.id = taken.user_id
         WHERE $6
     ), counted AS (
         INSERT INTO hourly_stats (hour, domain_id, shard, logins)
         SELECT floor(extract(epoch FROM {now}) / 3600)::BIGINT, u.domain_id, u.id % 16, 1
         FROM taken JOIN users u ON u.id = taken.user_id
         ON CONFLICT (hour, domain_id, shard) DO UPDATE SET logins = hourly_stats.logins + 1
     ), touched AS (
         UPDATE users SET last_login_at = {now}
         WHERE id IN (SELECT user_id FROM taken)
     )
     SELECT (SELECT token FROM taken), (SELECT wait FROM me),
            EXISTS (SELECT 1 FROM maildrop_locks
                    WHERE user_id = $1 AND expires_at >= {now}),
            EXISTS (SELECT 1 FROM me)"
        .replace("{now}", &Postgres::after("$5"))
});

#[async_trait]
impl Dialect for Postgres {
    const LOCK_ROWS: &'static str = "FOR NO KEY UPDATE";
    const NOW: &'static str = "clock_timestamp()";
    const NOW_MS: &'static str = "floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";
    const BYTEWISE: &'static str = "COLLATE \"C\"";
    const FIND: &'static str = "strpos";
    const CONCAT: &'static str = "string_agg";
    const EACH: &'static str = "unnest";
    const NEXT_UID: &'static str = "SELECT nextval('message_uids')";
    const RAISE_UID: &'static str =
        "SELECT setval('message_uids', $1) WHERE $1 > (SELECT last_value FROM message_uids)";
    type Ids = Vec<i64>;
    type Names = Vec<String>;

    fn ids(ids: &[i64]) -> Vec<i64> {
        ids.to_vec()
    }

    fn names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
        names.map(str::to_string).collect()
    }

    fn millis(column: &str) -> String {
        format!("floor(extract(epoch FROM {column}) * 1000)::BIGINT")
    }

    fn after(ms: &str) -> String {
        format!("clock_timestamp() + make_interval(secs => {ms}::FLOAT8 / 1000)")
    }

    async fn begin_write(pool: &Pool<Postgres>) -> Result<Transaction<'static, Postgres>> {
        Ok(pool.begin().await?)
    }

    async fn recover(store: &PostgresStore, me: &Claimant) -> Result<()> {
        // A claim nobody renews lapses at its expiry; one that is renewed meanwhile is a live
        // server's. Polled until one or the other.
        let mut first: Option<NodeHolder> = None;
        loop {
            let Some(holder) = store.claim_and_recover(me).await? else {
                let _ = store.claimant.set(me.clone());
                return Ok(());
            };
            match &first {
                None => {
                    tracing::warn!(
                        node = %store.node,
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
                        store.node
                    )));
                }
                Some(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn heartbeat(store: &PostgresStore) -> Result<()> {
        let Some(me) = store.claimant.get() else {
            return Err(StoreError::Invalid("heartbeat before recover".into()));
        };
        // Re-inserts a claim row that went missing; never takes over another server's.
        let update = "SET renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at
            WHERE n.incarnation = EXCLUDED.incarnation";
        if store.claim_node(me, update, &store.pool).await? {
            return Ok(());
        }
        let holder = match store.node_holder(&store.pool).await? {
            Some(holder) => holder.to_string(),
            None => "unknown".into(),
        };
        Err(StoreError::Conflict(format!(
            "node_id {:?} was taken over by another pophost ({holder}) while this one went \
             unheard: give each frontend its own node_id",
            store.node
        )))
    }

    async fn leave(store: &PostgresStore) -> Result<()> {
        sqlx::query("DELETE FROM nodes WHERE node = $1 AND incarnation = $2")
            .bind(&store.node)
            .bind(&store.incarnation)
            .execute(&store.pool)
            .await?;
        Ok(())
    }

    async fn lock(
        store: &PostgresStore,
        user: UserId,
        login: Option<&LoginRecord>,
    ) -> Result<Lease> {
        // One statement (its own transaction): the user row first (as deliveries lock it after
        // the domain, never before a stats row), since LOGIN-DELAY reads and moves
        // last_login_at and concurrent logins queue there; then take a free maildrop, or take
        // over a lease whose holder stopped renewing it (a live lease makes the upsert's WHERE
        // false: nothing is returned and no login is counted). A login still inside its
        // LOGIN-DELAY takes nothing. The third column says whether a live lease was there: "in
        // use" is the answer a client should hear before the delay. `{now}` is the lease clock.
        let row = sqlx::query(AssertSqlSafe(LOCK.as_str()))
            .bind(user.0)
            .bind(&store.node)
            .bind(&store.incarnation)
            .bind(store.ttl.as_secs_f64())
            .bind(store.clock.offset_ms())
            // The login's event, written with the lock's own time and token (`logged`):
            // `live_sessions` finds it by those.
            .bind(login.is_some())
            .bind(login.and_then(|l| l.ip).map(|ip| ip.to_string()))
            .bind(login.map_or("", |l| l.mechanism.as_str()))
            .bind(login.is_some_and(|l| l.tls))
            .fetch_one(&store.pool)
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
        Ok(Lease { user, token })
    }

    async fn list(store: &PostgresStore, user: UserId) -> Result<Vec<MessageMeta>> {
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
        .fetch_one(&store.pool)
        .await?;
        zip_listing(
            &ids.unwrap_or_default(),
            &sizes.unwrap_or_default(),
            &blobs.unwrap_or_default(),
            uids.as_deref().unwrap_or_default(),
        )
    }

    async fn count_auth_attempt(
        store: &PostgresStore,
        attempt: &AuthAttempt,
        window: Duration,
    ) -> Result<Vec<u64>> {
        // Committed on its own before the count: in one transaction, two attempts' inserts
        // would each be invisible to the other's count until both committed.
        sqlx::query(
            "WITH pruned AS (DELETE FROM auth_failures WHERE at < $3)
             INSERT INTO auth_failures (key, at, attempt) SELECT k, $2, $4 FROM unnest($1::text[]) k",
        )
        .bind(&attempt.keys)
        .bind(attempt.at)
        .bind(attempt.at - 3_600_000)
        .bind(attempt.id)
        .execute(&store.pool)
        .await?;
        auth_counts(&store.pool, &attempt.keys, attempt.at, window).await
    }

    async fn expire(store: &PostgresStore, now: i64, batch: u32) -> Result<ExpireReport> {
        let mut report = ExpireReport::default();
        loop {
            let mut tx = store.pool.begin().await?;
            // SKIP LOCKED: another frontend's job (or a QUIT deleting them) has these rows;
            // this run takes the next ones instead of waiting or deleting them twice.
            let rows = sqlx::query(AssertSqlSafe(
                "SELECT m.id, m.user_id FROM messages m
                 JOIN users u ON u.id = m.user_id JOIN domains d ON d.id = u.domain_id
                 WHERE d.retention_days IS NOT NULL
                   AND m.delivered_at < to_timestamp($1::FLOAT8 / 1000)
                                        - make_interval(days => d.retention_days)
                   AND NOT EXISTS (SELECT 1 FROM maildrop_locks l
                                   WHERE l.user_id = m.user_id AND l.expires_at >= {now})
                 ORDER BY m.id LIMIT $2
                 FOR UPDATE OF m SKIP LOCKED"
                    .replace("{now}", &Self::after("$3")),
            ))
            .bind(now)
            .bind(i64::from(batch))
            .bind(store.clock.offset_ms())
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
            let locked: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT user_id FROM maildrop_locks WHERE user_id = ANY($1) AND expires_at >= {}",
                Self::after("$2")
            )))
            .bind(&users)
            .bind(store.clock.offset_ms())
            .fetch_all(&mut *tx)
            .await?;
            let mut deleted = 0u64;
            for (user, ids) in &per_user {
                if locked.contains(user) {
                    continue;
                }
                PostgresStore::delete_messages(
                    &mut tx,
                    *user,
                    ids,
                    crate::sql::Deleting::Retention,
                )
                .await?;
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

    /// In one statement, `STORE_PARCELS`.
    async fn flush(p: Pending<'_>, tx: &mut Transaction<'_, Postgres>, prefix: &str) -> Result<()> {
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
                       used_messages = u.used_messages + t.messages,
                       last_delivery = floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
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
              ON CONFLICT (hour, domain_id, shard)
                  DO UPDATE SET delivered = hourly_stats.delivered + EXCLUDED.delivered)
    INSERT INTO messages (user_id, uid, blob_id, prefix, size)
    SELECT t.user_id, $6 || '.' || nextval('message_uids'), p.id, t.prefix, t.size
    FROM unnest($7::BIGINT[], $8::BIGINT[], $9::BYTEA[], $10::BIGINT[]) WITH ORDINALITY
        AS t(parcel, user_id, prefix, size, k)
    JOIN p ON p.n = t.parcel
    ORDER BY t.k";

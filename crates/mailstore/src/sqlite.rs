//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`, so a committed
//! delivery or UPDATE survives a crash or power loss. Write transactions start with
//! `BEGIN IMMEDIATE`: they take the write lock up front instead of failing on upgrade, and hold
//! the database's one write lock until they end, so nothing needs row locks. Times are Unix
//! milliseconds; lists are bound as JSON arrays and read with `json_each`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Pool, Row, Sqlite, Transaction};

use crate::batch::Pending;
use crate::convert::*;
use crate::sql::{Dialect, SqlStore};
use crate::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

pub type SqliteStore = SqlStore<Sqlite>;

impl SqlStore<Sqlite> {
    /// Opens (creating if missing) the database file; `migrate` applies pending migrations.
    /// The file holds password hashes and SCRAM verifiers: a missing directory is created 0700
    /// and a missing file 0600 (SQLite gives its -wal and -shm files the file's mode).
    pub async fn open(path: &Path, lock: LockOptions, migrate: bool) -> Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let invalid = |what: &str, at: &Path, e| {
            StoreError::Invalid(format!("cannot create {what} {}: {e}", at.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| invalid("data directory", dir, e))?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(invalid("database", path, e));
            }
            _ => {}
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = Self::pool(8, options.clone()).await?;
        // Lease bookkeeping (see `SqlStore::soft`) commits without an fsync: in WAL mode the
        // commit is in the log at once, a process crash loses nothing, and the next commit of
        // `pool` syncs it with its own. A power loss may lose the last of them, which only
        // matters to sessions that died with the machine (`recover` frees their locks). With
        // an fsync each, the two of every POP3 poll held the one write lock through two disk
        // syncs, and that bounded the polls per second.
        let soft = Self::pool(4, options.synchronous(SqliteSynchronous::Normal)).await?;
        Self::with_pool(pool, soft, lock, migrate.then_some(&MIGRATOR)).await
    }

    /// `size` connections with the busy handler `retry_soon`.
    async fn pool(size: u32, options: SqliteConnectOptions) -> Result<Pool<Sqlite>> {
        Ok(SqlitePoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let mut handle = conn.lock_handle().await?;
                    // SAFETY: the handle is this connection's, locked for this thread while
                    // the call runs; `retry_soon` is a plain function that touches no state.
                    unsafe {
                        libsqlite3_sys::sqlite3_busy_handler(
                            handle.as_raw_handle().as_ptr(),
                            Some(retry_soon),
                            std::ptr::null_mut(),
                        );
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?)
    }
}

/// How long a connection waits for the database's one write lock before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting connection tries the write lock again.
const BUSY_RETRY: Duration = Duration::from_micros(100);

/// The busy handler of every connection. SQLite's own (`busy_timeout`) sleeps 1, 2, 5, 10 …
/// 100 ms between tries, while a write transaction holds the lock for a commit's fsync, about
/// 1–2 ms: under concurrent logins a waiting writer slept far longer than the lock was held,
/// which made the POP3S poll's p99 hundreds of milliseconds. It runs on the connection's own
/// thread (sqlx's worker), never on the async runtime's.
extern "C" fn retry_soon(_: *mut std::ffi::c_void, tries: std::ffi::c_int) -> std::ffi::c_int {
    if BUSY_RETRY * u32::try_from(tries).unwrap_or(u32::MAX) >= BUSY_TIMEOUT {
        return 0;
    }
    std::thread::sleep(BUSY_RETRY);
    1
}

/// Rows per multi-row `INSERT` in `flush`: 6 parameters each stays far below SQLite's limit of
/// 32,766.
const ROWS_PER_INSERT: usize = 1000;

#[async_trait]
impl Dialect for Sqlite {
    const LOCK_ROWS: &'static str = "";
    const NOW: &'static str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";
    const NOW_MS: &'static str = Self::NOW;
    const BYTEWISE: &'static str = "";
    const FIND: &'static str = "instr";
    const CONCAT: &'static str = "group_concat";
    const EACH: &'static str = "value FROM json_each";
    const NEXT_UID: &'static str =
        "UPDATE counters SET value = value + 1 WHERE name = 'uid' RETURNING value";
    const RAISE_UID: &'static str = "UPDATE counters SET value = max(value, $1) WHERE name = 'uid'";
    type Ids = String;
    type Names = String;

    fn ids(ids: &[i64]) -> String {
        json_array(ids.iter().map(i64::to_string))
    }

    fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
        json_array(names.map(json_string))
    }

    fn millis(column: &str) -> String {
        column.to_string()
    }

    fn after(ms: &str) -> String {
        format!("{} + {ms}", Self::NOW)
    }

    async fn begin_write(pool: &Pool<Sqlite>) -> Result<Transaction<'static, Sqlite>> {
        Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    // The serve lock next to the database file is this server's claim: there is nothing more
    // to claim, renew or give up.
    async fn recover(store: &SqliteStore, _me: &Claimant) -> Result<()> {
        let mut tx = Self::begin_write(&store.pool).await?;
        store.free_previous_run(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn heartbeat(_store: &SqliteStore) -> Result<()> {
        Ok(())
    }

    async fn leave(_store: &SqliteStore) -> Result<()> {
        Ok(())
    }

    async fn lock(store: &SqliteStore, user: UserId, login: Option<&LoginRecord>) -> Result<Lease> {
        let now = now_ms() + store.clock.offset_ms();
        let mut tx = Self::begin_write(&store.soft).await?;
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
        .bind(&store.node)
        .bind(&store.incarnation)
        .bind(token)
        .bind(now + i64::try_from(store.ttl.as_millis()).unwrap_or(i64::MAX / 2))
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
            "INSERT INTO hourly_stats (hour, domain_id, shard, logins)
             SELECT $1, domain_id, id % 16, 1 FROM users WHERE id = $2
             ON CONFLICT (hour, domain_id, shard) DO UPDATE SET logins = logins + 1",
        )
        .bind(now / 3_600_000)
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
        if let Some(login) = login {
            // At the lock's own time and with its token: `live_sessions` finds it by those.
            SqliteStore::record_login_in(&mut tx, user, login, now, token).await?;
        }
        tx.commit().await?;
        Ok(Lease { user, token })
    }

    async fn list(store: &SqliteStore, user: UserId) -> Result<Vec<MessageMeta>> {
        // One row for the whole listing (see `parse_listing`): a large maildrop's rows would
        // otherwise each be decoded and handed across threads one by one. The index
        // `messages_listing` covers the inner query, in id order, without a sort.
        let listing: Option<String> = sqlx::query_scalar(
            "SELECT group_concat(id || ' ' || size || ' ' || blob_id || ' ' || uid, char(10))
             FROM (SELECT id, size, blob_id, uid FROM messages WHERE user_id = $1 ORDER BY id)",
        )
        .bind(user.0)
        .fetch_one(&store.pool)
        .await?;
        parse_listing(listing.as_deref().unwrap_or_default())
    }

    async fn count_auth_attempt(
        store: &SqliteStore,
        attempt: &AuthAttempt,
        window: Duration,
    ) -> Result<Vec<u64>> {
        // One write transaction: SQLite has one writer at a time, so the count sees every
        // attempt counted before this one.
        let mut tx = Self::begin_write(&store.pool).await?;
        sqlx::query("DELETE FROM auth_failures WHERE at < $1")
            .bind(attempt.at - 3_600_000)
            .execute(&mut *tx)
            .await?;
        let mut q =
            sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO auth_failures (key, at, attempt) ");
        q.push_values(&attempt.keys, |mut row, key| {
            row.push_bind(key.as_str())
                .push_bind(attempt.at)
                .push_bind(attempt.id);
        });
        q.build().execute(&mut *tx).await?;
        let counts = auth_counts(&mut tx, &attempt.keys, attempt.at, window).await?;
        tx.commit().await?;
        Ok(counts)
    }

    async fn expire(store: &SqliteStore, now: i64, batch: u32) -> Result<ExpireReport> {
        let mut report = ExpireReport::default();
        loop {
            // BEGIN IMMEDIATE: one writer at a time, so several frontends (or several runs)
            // never work on the same rows; each batch is its own short transaction.
            let mut tx = Self::begin_write(&store.pool).await?;
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT m.id, m.user_id FROM messages m
                 JOIN users u ON u.id = m.user_id JOIN domains d ON d.id = u.domain_id
                 WHERE d.retention_days IS NOT NULL
                   AND m.delivered_at < $1 - d.retention_days * 86400000
                   AND NOT EXISTS (SELECT 1 FROM maildrop_locks l
                                   WHERE l.user_id = m.user_id AND l.expires_at >= $2)
                 ORDER BY m.id LIMIT $3",
            )
            .bind(now)
            // Leases run on the lease clock, whatever `now` the caller tests with.
            .bind(now_ms() + store.clock.offset_ms())
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await?;
            let mut per_user = std::collections::BTreeMap::<i64, Vec<MessageId>>::new();
            for (id, user) in &rows {
                per_user.entry(*user).or_default().push(MessageId(*id));
            }
            for (user, ids) in &per_user {
                SqliteStore::delete_messages(&mut tx, *user, ids, crate::sql::Deleting::Retention)
                    .await?;
            }
            tx.commit().await?;
            report.batches += 1;
            report.deleted += rows.len() as u64;
            if rows.len() < batch as usize {
                return Ok(report);
            }
        }
    }

    /// In a handful of statements whatever the batch's size: every statement is a hand-over to
    /// SQLite's thread and back, and those hand-overs, not SQLite's work, were what a delivery
    /// cost (docs/BENCHMARKS.md, (d)).
    async fn flush(p: Pending<'_>, tx: &mut Transaction<'_, Sqlite>, prefix: &str) -> Result<()> {
        let now = now_ms();
        if !p.unused_blobs.is_empty() {
            sqlx::query("DELETE FROM blobs WHERE id IN (SELECT value FROM json_each($1))")
                .bind(Self::ids(&p.unused_blobs))
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
        // A user's row also says when mail last arrived (the admin pages show it).
        for (table, usage, extra) in [
            ("users", &p.user_usage, ", last_delivery = $2"),
            ("domains", &p.domain_usage, ""),
        ] {
            let q = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET used_bytes = used_bytes + t.bytes,
                     used_messages = used_messages + t.messages{extra}
                 FROM (SELECT value ->> 0 AS id, value ->> 1 AS bytes, value ->> 2 AS messages
                       FROM json_each($1)) AS t
                 WHERE {table}.id = t.id"
            )))
            .bind(json_usage(usage));
            let q = if extra.is_empty() { q } else { q.bind(now) };
            q.execute(&mut **tx).await?;
        }
        sqlx::query(
            "INSERT INTO hourly_stats (hour, domain_id, delivered)
             SELECT $1, value ->> 0, value ->> 2 FROM json_each($2) WHERE true
             ON CONFLICT (hour, domain_id, shard)
             DO UPDATE SET delivered = delivered + excluded.delivered",
        )
        .bind(now / 3_600_000)
        .bind(json_usage(&p.domain_usage))
        .execute(&mut **tx)
        .await?;
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

fn json_array(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(","))
}

/// A JSON string literal: keys and names can hold anything a client sent.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Usage to add, `[[id, bytes, messages], ...]`, for `json_each`.
fn json_usage(usage: &std::collections::BTreeMap<i64, (i64, i64)>) -> String {
    json_array(
        usage
            .iter()
            .map(|(id, (bytes, messages))| format!("[{id},{bytes},{messages}]")),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_strings_escape_what_json_requires() {
        assert_eq!(
            super::json_string("a\"b\\c\u{1}é"),
            "\"a\\\"b\\\\c\\u0001é\""
        );
    }
}

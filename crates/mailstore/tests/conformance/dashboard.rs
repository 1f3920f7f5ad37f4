//! The dashboard's queries (issue "Admin UI", item 6): top domains and users by storage and by
//! logins in a range, failed logins per hour, migration counts; each in scope, on both
//! backends. Login events are written with SQL, as the POP3 frontend's rows would be, so these
//! stories test the reading side only.

use super::*;

/// Runs SQL straight on a backend's database.
trait Raw {
    async fn exec(&self, statements: &str);
}

impl Raw for Sqlite {
    async fn exec(&self, statements: &str) {
        let url = format!("sqlite://{}", self.0.path().join("pophost.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_string()))
            .execute(&pool)
            .await
            .expect("exec");
        pool.close().await;
    }
}

impl Raw for Pg {
    async fn exec(&self, statements: &str) {
        let pool = sqlx::PgPool::connect(&self.0.url).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_string()))
            .execute(&pool)
            .await
            .expect("exec");
        pool.close().await;
    }
}

const HOUR_MS: i64 = 3_600_000;

fn scope(names: &[&str]) -> Scope {
    Scope::Domains(names.iter().map(|n| domain(n)).collect())
}

fn names<T: ToString>(list: &[Ranked<T>]) -> Vec<(String, u64)> {
    list.iter().map(|r| (r.name.to_string(), r.value)).collect()
}

/// A login event of `user` (a local part of `domain`, or none) at `at` ms.
fn event(user: Option<&str>, domain: Option<&str>, at: i64, success: bool) -> String {
    let user = user.map_or("NULL".to_string(), |local| {
        format!(
            "(SELECT u.id FROM users u JOIN domains d ON d.id = u.domain_id
              WHERE u.localpart = '{local}' AND d.name = '{}')",
            domain.unwrap_or_default()
        )
    });
    // A successful login names its user only, as a failure for an unknown user names only the
    // domain: the queries must scope both.
    let domain = match (success, domain) {
        (false, Some(d)) => format!("(SELECT id FROM domains WHERE name = '{d}')"),
        _ => "NULL".into(),
    };
    format!(
        "INSERT INTO login_events (user_id, domain_id, at, ip, mechanism, tls, success, reason)
         VALUES ({user}, {domain}, {at}, '192.0.2.1', 'USER', TRUE, {success}, {});\n",
        if success { "NULL" } else { "'wrong_password'" }
    )
}

async fn sized(s: &dyn Store, address: &str, bytes: usize) {
    let id = user(s, address).await;
    if bytes > 0 {
        let out = deliver(s, &vec![b'x'; bytes], 64, &[(id, "")]).await;
        assert!(out[0].is_ok(), "{out:?}");
    }
}

async fn top_lists_rank_storage_and_logins_in_range_and_scope<B: Backend + Raw>(b: B) {
    let s = b.open(LockOptions::default()).await;
    sized(&*s, "ann@a.example", 3000).await;
    sized(&*s, "bob@a.example", 1000).await;
    sized(&*s, "cat@a.example", 0).await;
    sized(&*s, "dan@b.example", 2000).await;
    sized(&*s, "eve@c.example", 500).await;
    let now = now_hour() * HOUR_MS;
    let since = now - 24 * HOUR_MS;
    let mut sql = String::new();
    for _ in 0..3 {
        sql += &event(Some("bob"), Some("a.example"), now, true);
    }
    sql += &event(Some("dan"), Some("b.example"), now - HOUR_MS, true);
    sql += &event(Some("dan"), Some("b.example"), now - HOUR_MS, true);
    sql += &event(Some("ann"), Some("a.example"), now, true);
    // Outside the range, and failures: neither counts as a login.
    for _ in 0..5 {
        sql += &event(Some("ann"), Some("a.example"), since - 1, true);
        sql += &event(Some("cat"), Some("a.example"), now, false);
    }
    // Domain logins come from the per-hour counters.
    let hour = now_hour();
    sql += &format!(
        "INSERT INTO hourly_stats (hour, domain_id, delivered, logins) VALUES
         ({hour}, (SELECT id FROM domains WHERE name = 'b.example'), 0, 7),
         ({hour}, (SELECT id FROM domains WHERE name = 'a.example'), 0, 2),
         ({}, (SELECT id FROM domains WHERE name = 'c.example'), 0, 50)
         ON CONFLICT (hour, domain_id, shard) DO UPDATE SET logins = EXCLUDED.logins;",
        hour - 30
    );
    b.exec(&sql).await;

    let all = s.top_lists(&Scope::All, since, 10).await.expect("top");
    assert_eq!(
        names(&all.domains_by_storage),
        [("a.example", 4000), ("b.example", 2000), ("c.example", 500)]
            .map(|(n, v)| (n.to_string(), v))
    );
    assert_eq!(
        names(&all.users_by_storage),
        [
            ("ann@a.example", 3000),
            ("dan@b.example", 2000),
            ("bob@a.example", 1000),
            ("eve@c.example", 500)
        ]
        .map(|(n, v)| (n.to_string(), v)),
        "users without mail are not ranked"
    );
    assert_eq!(
        names(&all.users_by_logins),
        [
            ("bob@a.example", 3),
            ("dan@b.example", 2),
            ("ann@a.example", 1)
        ]
        .map(|(n, v)| (n.to_string(), v))
    );
    assert_eq!(
        names(&all.domains_by_logins),
        [("b.example", 7), ("a.example", 2)].map(|(n, v)| (n.to_string(), v)),
        "c.example's logins were before the range"
    );
    assert_eq!(all.logins_counted, 6, "successful logins in the range");
    let wide = s
        .top_lists(&Scope::All, since - 40 * HOUR_MS, 10)
        .await
        .expect("top");
    assert_eq!(
        names(&wide.domains_by_logins).first(),
        Some(&("c.example".to_string(), 50))
    );
    assert_eq!(
        names(&wide.users_by_logins).first(),
        Some(&("ann@a.example".to_string(), 6))
    );

    let two = s.top_lists(&Scope::All, since, 2).await.expect("top");
    assert_eq!(
        (
            two.domains_by_storage.len(),
            two.users_by_storage.len(),
            two.users_by_logins.len()
        ),
        (2, 2, 2)
    );

    let tenant = s
        .top_lists(&scope(&["a.example"]), since, 10)
        .await
        .expect("top");
    assert_eq!(
        names(&tenant.domains_by_storage),
        vec![("a.example".to_string(), 4000)]
    );
    assert_eq!(
        names(&tenant.users_by_storage),
        [("ann@a.example", 3000), ("bob@a.example", 1000)].map(|(n, v)| (n.to_string(), v))
    );
    assert_eq!(
        names(&tenant.users_by_logins),
        [("bob@a.example", 3), ("ann@a.example", 1)].map(|(n, v)| (n.to_string(), v))
    );
    assert_eq!(
        names(&tenant.domains_by_logins),
        vec![("a.example".to_string(), 2)]
    );
    let two_domains = s
        .top_lists(&scope(&["b.example", "c.example"]), since, 10)
        .await
        .expect("top");
    assert_eq!(
        names(&two_domains.users_by_storage),
        [("dan@b.example", 2000), ("eve@c.example", 500)].map(|(n, v)| (n.to_string(), v))
    );
    let nobody = s.top_lists(&scope(&[]), since, 10).await.expect("top");
    assert_eq!(nobody, TopLists::default());
}

async fn failed_logins_are_counted_per_hour_in_scope<B: Backend + Raw>(b: B) {
    let s = b.open(LockOptions::default()).await;
    user(&*s, "ann@a.example").await;
    user(&*s, "dan@b.example").await;
    let hour = now_hour() - 5;
    // The per-hour counters the failures write (see `failures_count_where_they_are_recorded`):
    // a.example two and one, b.example one, and failures that named no known domain; an hour
    // with logins but no failure is no point of this chart.
    let sql = format!(
        "INSERT INTO hourly_stats (hour, domain_id, failed_logins) VALUES
             ({hour}, (SELECT id FROM domains WHERE name = 'a.example'), 2),
             ({}, (SELECT id FROM domains WHERE name = 'a.example'), 1),
             ({hour}, (SELECT id FROM domains WHERE name = 'b.example'), 1);
         INSERT INTO hourly_stats (hour, domain_id, logins) VALUES
             ({}, (SELECT id FROM domains WHERE name = 'a.example'), 5);
         INSERT INTO hourly_failures (hour, failed) VALUES ({hour}, 1), ({}, 1);",
        hour + 1,
        hour + 2,
        hour - 3
    );
    b.exec(&sql).await;

    let all = s.failed_logins(&Scope::All, hour).await.expect("failed");
    assert_eq!(
        all,
        vec![
            FailedLogins { hour, failed: 4 },
            FailedLogins {
                hour: hour + 1,
                failed: 1
            }
        ]
    );
    let earlier = s
        .failed_logins(&Scope::All, hour - 3)
        .await
        .expect("failed");
    assert_eq!(
        earlier.first().map(|f| (f.hour, f.failed)),
        Some((hour - 3, 1))
    );
    assert_eq!(
        s.failed_logins(&scope(&["a.example"]), hour)
            .await
            .expect("failed"),
        vec![
            FailedLogins { hour, failed: 2 },
            FailedLogins {
                hour: hour + 1,
                failed: 1
            }
        ]
    );
    assert_eq!(
        s.failed_logins(&scope(&["b.example"]), 0)
            .await
            .expect("failed"),
        vec![FailedLogins { hour, failed: 1 }],
        "failures naming no domain are the super admins' only"
    );
    assert!(
        s.failed_logins(&Scope::All, hour + 2)
            .await
            .expect("failed")
            .is_empty()
    );
}

/// Every failure the POP3 frontend reports, and every login the lock refuses, counts in its
/// hour: on the domain tried or the named user's, or apart when it names no known domain.
async fn failures_count_where_they_are_recorded<B: Backend + Raw>(b: B) {
    let s = b.open(LockOptions::default()).await;
    let ann = user(&*s, "ann@a.example").await;
    user(&*s, "dan@b.example").await;
    let failure = |address: Option<&str>, domain_name: Option<&str>| FailedLogin {
        login: LoginRecord {
            ip: None,
            mechanism: "USER".into(),
            tls: false,
        },
        address: address.map(addr),
        domain: domain_name.map(domain),
        reason: FailureReason::WrongPassword,
    };
    let hour = now_hour();
    for (address, domain_name) in [
        (Some("ann@a.example"), None),
        (Some("nobody@a.example"), None),
        (None, Some("a.example")),
        (Some("dan@b.example"), None),
        (Some("ann@nowhere.example"), None),
        (None, Some("nowhere.example")),
        (None, None),
    ] {
        s.record_failed_login(&failure(address, domain_name))
            .await
            .expect("failure");
    }
    let lease = s
        .lock_for_login(ann, &failure(None, None).login)
        .await
        .expect("login");
    assert!(matches!(
        s.lock_for_login(ann, &failure(None, None).login).await,
        Err(StoreError::InUse)
    ));
    s.unlock(&lease).await.expect("unlock");

    // The hour may have turned between the failures: count from the first one's.
    let total = |list: Vec<FailedLogins>| list.iter().map(|f| f.failed).sum::<u64>();
    assert_eq!(
        total(s.failed_logins(&Scope::All, hour).await.expect("all")),
        8
    );
    assert_eq!(
        total(
            s.failed_logins(&scope(&["a.example"]), hour)
                .await
                .expect("a")
        ),
        4,
        "ann's wrong password and refused login, the unknown user, the domain-only failure"
    );
    assert_eq!(
        total(
            s.failed_logins(&scope(&["b.example"]), hour)
                .await
                .expect("b")
        ),
        1
    );
    assert_eq!(
        total(
            s.failed_logins(&scope(&["nowhere.example"]), hour)
                .await
                .expect("unknown")
        ),
        0,
        "a failure in a domain that does not exist is the super admins' only"
    );
}

async fn migration_counts_cover_domains_in_migration_mode_in_scope(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let ann = user(&*s, "ann@a.example").await;
    user(&*s, "bob@a.example").await;
    user(&*s, "cat@a.example").await;
    let dan = user(&*s, "dan@b.example").await;
    user(&*s, "eve@c.example").await;
    assert_eq!(
        s.migration_counts(&Scope::All).await.expect("counts"),
        MigrationCounts::default()
    );
    s.set_migrate_from(&domain("a.example"), Some("pop3s://old.example:995"))
        .await
        .expect("migrate");
    s.set_migrate_from(&domain("b.example"), Some("pop3://old.example"))
        .await
        .expect("migrate");
    s.finish_migration(ann).await.expect("finish");
    s.finish_migration(dan).await.expect("finish");
    assert_eq!(
        s.migration_counts(&Scope::All).await.expect("counts"),
        MigrationCounts {
            domains: 2,
            migrated: 2,
            to_go: 2
        },
        "c.example is not migrating: its user is in neither count"
    );
    assert_eq!(
        s.migration_counts(&scope(&["a.example", "c.example"]))
            .await
            .expect("counts"),
        MigrationCounts {
            domains: 1,
            migrated: 1,
            to_go: 2
        }
    );
    assert_eq!(
        s.migration_counts(&scope(&["c.example"]))
            .await
            .expect("counts"),
        MigrationCounts::default()
    );
}

stories!(
    top_lists_rank_storage_and_logins_in_range_and_scope,
    failed_logins_are_counted_per_hour_in_scope,
    failures_count_where_they_are_recorded,
    migration_counts_cover_domains_in_migration_mode_in_scope,
);

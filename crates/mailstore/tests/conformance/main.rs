//! The store conformance suite: every behaviour the frontends rely on, written once against the
//! traits. Each `story` takes a `Backend` that opens stores on one database; SQLite runs always
//! (a real file in a temp dir), Postgres on a database of its own per test (see `pgtest`).

use std::sync::Arc;
use std::time::Duration;

use mailstore::*;

mod policies;
use policies::*;

/// Opens stores on one database, as separate server runs would.
trait Backend {
    async fn open(&self, lock: LockOptions) -> Arc<dyn Store>;
}

struct Sqlite(tempfile::TempDir);

impl Sqlite {
    fn new() -> Self {
        Sqlite(tempfile::tempdir().expect("tempdir"))
    }
}

impl Backend for Sqlite {
    async fn open(&self, lock: LockOptions) -> Arc<dyn Store> {
        Arc::new(
            SqliteStore::open(&self.0.path().join("pophost.db"), lock, true)
                .await
                .expect("open"),
        )
    }
}

struct Pg(pgtest::Database);

impl Pg {
    fn new() -> Self {
        Pg(pgtest::Database::create())
    }
}

impl Backend for Pg {
    async fn open(&self, lock: LockOptions) -> Arc<dyn Store> {
        Arc::new(
            PostgresStore::open(&self.0.url, lock, PgOptions::default(), true)
                .await
                .expect("open"),
        )
    }
}

fn lock(node: &str, ttl_ms: u64) -> LockOptions {
    timed(node, ttl_ms, &LeaseClock::default())
}

/// Options for a store whose lease time is `clock`: stores opened with one clock see one time,
/// which the test moves on instead of sleeping.
fn timed(node: &str, ttl_ms: u64, clock: &LeaseClock) -> LockOptions {
    LockOptions {
        node: node.into(),
        ttl: Duration::from_millis(ttl_ms),
        clock: clock.clone(),
    }
}

fn addr(s: &str) -> Address {
    Address::parse(s).expect("address")
}

fn domain(s: &str) -> DomainName {
    DomainName::parse(s).expect("domain")
}

async fn user(store: &dyn Store, address: &str) -> UserId {
    let a = addr(address);
    // The domain may exist already from an earlier user.
    let _ = store.add_domain(&a.domain).await;
    store
        .add_user(&a, "$argon2id$fake", None)
        .await
        .expect("add user")
}

/// Writes `body` in chunks of `chunk` and delivers it; returns the outcomes.
async fn deliver(
    store: &dyn Store,
    body: &[u8],
    chunk: usize,
    to: &[(UserId, &str)],
) -> Vec<Result<()>> {
    store
        .deliver(parcel(store, body, chunk, to).await)
        .await
        .expect("deliver")
}

/// A body as LMTP hands it over: a body longer than one `chunk` streamed into a blob but for its
/// last part, a short one whole.
async fn parcel(store: &dyn Store, body: &[u8], chunk: usize, to: &[(UserId, &str)]) -> Parcel {
    let parts: Vec<&[u8]> = body.chunks(chunk).collect();
    let (streamed, tail) = match parts.split_last() {
        Some((tail, streamed)) if !streamed.is_empty() => (streamed, *tail),
        _ => (&[][..], body),
    };
    let mut blob = None;
    for (seq, part) in streamed.iter().enumerate() {
        if blob.is_none() {
            blob = Some(store.begin_blob().await.expect("blob"));
        }
        store
            .append_chunk(blob.expect("blob"), seq as u32, part)
            .await
            .expect("chunk");
    }
    Parcel {
        blob,
        chunks: streamed.len() as u32,
        tail: tail.to_vec(),
        size: body.len() as u64,
        recipients: to
            .iter()
            .map(|(u, prefix)| Recipient {
                user: *u,
                prefix: prefix.as_bytes().to_vec(),
            })
            .collect(),
        dedup: None,
    }
}

async fn read_all(store: &dyn Store, m: &MessageMeta) -> Vec<u8> {
    let mut out = Vec::new();
    let mut part = 0;
    while let Some(data) = store.read_part(m, part).await.expect("read") {
        out.extend_from_slice(&data);
        part += 1;
    }
    out
}

async fn usage(store: &dyn Store, address: &str) -> Usage {
    let a = addr(address);
    store
        .list_users(&a.domain)
        .await
        .expect("list")
        .into_iter()
        .find(|u| u.address == a)
        .expect("user listed")
        .usage
}

async fn provisioning(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let d = domain("Example.COM");
    s.add_domain(&d).await.expect("add");
    assert!(matches!(
        s.add_domain(&domain("example.com")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_user(&addr("a@nowhere.example"), "h", None).await,
        Err(StoreError::NotFound(_))
    ));
    s.add_user(&addr("John@example.com"), "h1", Some("SCRAM-SHA-256$v1"))
        .await
        .expect("user");
    assert!(matches!(
        s.add_user(&addr("john@EXAMPLE.com"), "h", None).await,
        Err(StoreError::Conflict(_))
    ));
    let found = s
        .find_user(&addr("JOHN@example.com"))
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.password_hash, "h1");
    assert_eq!(found.scram.as_deref(), Some("SCRAM-SHA-256$v1"));
    s.set_password(&addr("john@example.com"), "h2", Some("SCRAM-SHA-256$v2"))
        .await
        .expect("passwd");
    let found = s
        .find_user(&addr("john@example.com"))
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.scram.as_deref(), Some("SCRAM-SHA-256$v2"));
    // A new password without a verifier clears the old one.
    s.set_password(&addr("john@example.com"), "h2", None)
        .await
        .expect("passwd");
    assert_eq!(
        s.find_user(&addr("john@example.com"))
            .await
            .expect("find")
            .expect("exists")
            .scram,
        None
    );
    assert_eq!(
        s.find_user(&addr("john@example.com"))
            .await
            .expect("find")
            .expect("exists")
            .password_hash,
        "h2"
    );
    assert!(
        s.find_user(&addr("jane@example.com"))
            .await
            .expect("find")
            .is_none()
    );
    s.set_user_quota(
        &addr("john@example.com"),
        QuotaChange {
            bytes: Some(Some(10)),
            messages: None,
        },
    )
    .await
    .expect("quota");
    s.set_domain_quota(
        &d,
        QuotaChange {
            bytes: None,
            messages: Some(Some(5)),
        },
    )
    .await
    .expect("quota");
    let domains = s.list_domains().await.expect("list");
    assert_eq!(domains.len(), 1);
    assert_eq!(domains[0].users, 1);
    assert_eq!(
        domains[0].quota,
        Quota {
            bytes: None,
            messages: Some(5)
        }
    );
    let users = s.list_users(&d).await.expect("users");
    assert_eq!(
        users[0].quota,
        Quota {
            bytes: Some(10),
            messages: None
        }
    );
    assert!(matches!(
        s.remove_domain(&d, false).await,
        Err(StoreError::Conflict(_))
    ));
    s.remove_domain(&d, true).await.expect("force");
    assert!(s.list_domains().await.expect("list").is_empty());
    assert!(matches!(
        s.remove_user(&addr("john@example.com")).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn delivery_stores_one_body_and_streams_it_back(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@example.com").await;
    let jane = user(&*s, "jane@example.com").await;
    let body: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("line {i}\r\n").into_bytes())
        .collect();
    let out = deliver(
        &*s,
        &body,
        4096,
        &[(john, "X-To: john\r\n"), (jane, "X-To: jane\r\n")],
    )
    .await;
    assert!(out.iter().all(Result::is_ok));
    let mut uids = Vec::new();
    for (u, prefix) in [(john, "X-To: john\r\n"), (jane, "X-To: jane\r\n")] {
        let list = s.list(u).await.expect("list");
        assert_eq!(list.len(), 1);
        let m = &list[0];
        assert_eq!(m.size, (prefix.len() + body.len()) as u64);
        assert_eq!(read_all(&*s, m).await, [prefix.as_bytes(), &body].concat());
        assert!(
            (1..=70).contains(&m.uid.len()) && m.uid.bytes().all(|c| (0x21..=0x7e).contains(&c))
        );
        uids.push(m.uid.clone());
    }
    assert_ne!(uids[0], uids[1]);
    assert_eq!(
        s.list(john).await.expect("list")[0].blob,
        s.list(jane).await.expect("list")[0].blob,
        "stored once"
    );
    assert_eq!(
        usage(&*s, "john@example.com").await,
        Usage {
            bytes: (12 + body.len()) as u64,
            messages: 1
        }
    );
}

async fn quotas_are_checked_per_recipient_and_usage_is_exact(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@example.com").await;
    let jane = user(&*s, "jane@example.com").await;
    s.set_user_quota(
        &addr("john@example.com"),
        QuotaChange {
            bytes: Some(Some(150)),
            messages: None,
        },
    )
    .await
    .expect("q");
    let out = deliver(&*s, &[b'x'; 100], 64, &[(john, ""), (jane, "")]).await;
    assert!(out[0].is_ok() && out[1].is_ok());
    let out = deliver(&*s, &[b'y'; 100], 64, &[(john, ""), (jane, "")]).await;
    assert!(matches!(out[0], Err(StoreError::QuotaExceeded)), "{out:?}");
    assert!(out[1].is_ok());
    s.set_domain_quota(
        &domain("example.com"),
        QuotaChange {
            bytes: None,
            messages: Some(Some(3)),
        },
    )
    .await
    .expect("q");
    let out = deliver(&*s, b"z", 64, &[(jane, "")]).await;
    assert!(
        matches!(out[0], Err(StoreError::QuotaExceeded)),
        "domain message quota: {out:?}"
    );
    assert_eq!(
        usage(&*s, "john@example.com").await,
        Usage {
            bytes: 100,
            messages: 1
        }
    );
    assert_eq!(
        usage(&*s, "jane@example.com").await,
        Usage {
            bytes: 200,
            messages: 2
        }
    );
    let d = &s.list_domains().await.expect("domains")[0];
    assert_eq!(
        d.usage,
        Usage {
            bytes: 300,
            messages: 3
        }
    );

    // UPDATE gives the space back, exactly.
    let lease = s.lock(jane).await.expect("lock");
    let ids: Vec<MessageId> = s
        .list(jane)
        .await
        .expect("list")
        .iter()
        .map(|m| m.id)
        .take(1)
        .collect();
    s.commit_update(&lease, &ids).await.expect("update");
    assert_eq!(
        usage(&*s, "jane@example.com").await,
        Usage {
            bytes: 100,
            messages: 1
        }
    );
    assert_eq!(
        s.list_domains().await.expect("domains")[0].usage,
        Usage {
            bytes: 200,
            messages: 2
        }
    );
}

async fn the_lock_is_exclusive_expires_and_fences(b: impl Backend) {
    let clock = LeaseClock::default();
    let s = b.open(timed("a", 60_000, &clock)).await;
    let john = user(&*s, "john@example.com").await;
    deliver(&*s, b"one\r\n", 64, &[(john, "")]).await;
    deliver(&*s, b"two\r\n", 64, &[(john, "")]).await;
    let first = s.lock(john).await.expect("lock");
    assert!(matches!(s.lock(john).await, Err(StoreError::InUse)));
    s.unlock(&first).await.expect("unlock");
    let held = s.lock(john).await.expect("lock again");

    // Renewal keeps a live session's lease past its TTL.
    for _ in 0..4 {
        clock.advance(Duration::from_secs(20));
        s.renew_leases().await.expect("renew");
    }
    assert!(matches!(s.lock(john).await, Err(StoreError::InUse)));
    clock.advance(Duration::from_secs(59));
    assert!(
        matches!(s.lock(john).await, Err(StoreError::InUse)),
        "a lease is held for its whole TTL"
    );

    // A holder that stops renewing loses the maildrop after the TTL; its UPDATE then changes nothing.
    let other = b.open(timed("b", 60_000, &clock)).await;
    clock.advance(Duration::from_secs(2));
    let taken = other.lock(john).await.expect("expired lease is taken over");
    assert!(taken.token > held.token, "fencing tokens increase");
    let ids: Vec<MessageId> = s
        .list(john)
        .await
        .expect("list")
        .iter()
        .map(|m| m.id)
        .collect();
    assert!(matches!(
        s.commit_update(&held, &ids).await,
        Err(StoreError::LeaseLost)
    ));
    assert_eq!(
        s.list(john).await.expect("list").len(),
        2,
        "a stale UPDATE deletes nothing"
    );
    other
        .commit_update(&taken, &ids[..1])
        .await
        .expect("update");
    assert_eq!(s.list(john).await.expect("list").len(), 1);
    assert!(s.lock(john).await.is_ok(), "UPDATE released the lock");
}

async fn aliases_and_login_forms(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@example.com").await;
    let (alias, real) = (domain("Example.NET"), domain("example.com"));
    s.add_alias(&alias, &real).await.expect("alias");
    assert!(matches!(
        s.add_alias(&alias, &real).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        matches!(
            s.add_alias(&real, &real).await,
            Err(StoreError::Conflict(_))
        ),
        "a domain cannot be an alias"
    );
    assert!(
        matches!(s.add_domain(&alias).await, Err(StoreError::Conflict(_))),
        "an alias cannot be a domain"
    );
    assert!(matches!(
        s.add_alias(&domain("x.example"), &domain("nowhere.example"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.list_aliases().await.expect("list"),
        vec![(alias.clone(), real.clone())]
    );
    let policy = s
        .domain_policy(&alias)
        .await
        .expect("policy")
        .expect("found");
    assert_eq!(
        policy,
        DomainPolicy {
            name: real.clone(),
            login_forms: LoginForms::all(),
            migrate_from: None,
        }
    );
    assert_eq!(
        s.domain_policy(&real)
            .await
            .expect("policy")
            .expect("found")
            .name,
        real
    );
    assert!(
        s.domain_policy(&domain("nowhere.example"))
            .await
            .expect("policy")
            .is_none()
    );
    assert_eq!(
        s.find_recipient(&addr("JOHN@example.net"))
            .await
            .expect("rcpt"),
        Some(john),
        "delivery through the alias"
    );
    assert_eq!(
        s.find_recipient(&addr("jane@example.net"))
            .await
            .expect("rcpt"),
        None
    );
    // RCPT's lookup (with its quota check) resolves the same way.
    assert_eq!(
        s.accept_recipient(&addr("JOHN@example.net"), Some(10))
            .await
            .expect("rcpt"),
        Some(john),
        "RCPT through the alias"
    );
    assert_eq!(
        s.accept_recipient(&addr("jane@example.net"), None)
            .await
            .expect("rcpt"),
        None
    );

    let forms = LoginForms::parse("at,plus").expect("forms");
    s.set_login_forms(&real, forms).await.expect("set");
    assert_eq!(
        s.domain_policy(&alias)
            .await
            .expect("policy")
            .expect("found")
            .login_forms,
        forms
    );
    assert!(matches!(
        s.set_login_forms(&alias, forms).await,
        Err(StoreError::NotFound(_))
    ));
    s.remove_alias(&alias).await.expect("remove");
    assert!(s.domain_policy(&alias).await.expect("policy").is_none());
    assert!(matches!(
        s.remove_alias(&alias).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn apop_secrets_and_domain_switch(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@example.com").await;
    let found = s
        .find_apop_user(&addr("john@example.com"))
        .await
        .expect("find")
        .expect("john");
    assert_eq!(found.id, john);
    assert_eq!(found.secret, None, "no secret by default");
    assert!(!found.domain_allows, "APOP is off by default");
    s.set_apop_secret(&addr("john@example.com"), Some("c2VhbGVk".into()))
        .await
        .expect("set secret");
    s.set_allow_apop(&domain("example.com"), true)
        .await
        .expect("allow");
    let found = s
        .find_apop_user(&addr("john@example.com"))
        .await
        .expect("find")
        .expect("john");
    assert_eq!(found.secret.as_deref(), Some("c2VhbGVk"));
    assert!(found.domain_allows);
    s.set_apop_secret(&addr("john@example.com"), None)
        .await
        .expect("clear");
    s.set_allow_apop(&domain("example.com"), false)
        .await
        .expect("disallow");
    let found = s
        .find_apop_user(&addr("john@example.com"))
        .await
        .expect("find")
        .expect("john");
    assert_eq!(found.secret, None);
    assert!(!found.domain_allows);
    assert!(
        s.find_apop_user(&addr("nobody@example.com"))
            .await
            .expect("find")
            .is_none()
    );
    assert!(matches!(
        s.set_apop_secret(&addr("nobody@example.com"), None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.set_allow_apop(&domain("example.org"), true).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn a_lease_given_up_is_not_renewed(b: impl Backend) {
    let clock = LeaseClock::default();
    let s = b.open(timed("a", 60_000, &clock)).await;
    let john = user(&*s, "john@example.com").await;
    let lease = s.lock(john).await.expect("lock");
    // A release that reaches no row (as when the database was briefly gone) leaves the row
    // behind; it must then expire, not be kept alive by the process's renewals.
    let stray = Lease {
        user: UserId(-1),
        token: lease.token,
    };
    s.unlock(&stray).await.expect("unlock");
    for _ in 0..4 {
        clock.advance(Duration::from_secs(20));
        s.renew_leases().await.expect("renew");
    }
    let other = b.open(timed("b", 60_000, &clock)).await;
    assert!(
        other.lock(john).await.is_ok(),
        "a lease given up was still renewed"
    );
}

async fn a_restart_frees_the_previous_runs_locks_and_partial_bodies(b: impl Backend) {
    let crashed = b.open(lock("node1", 60_000)).await;
    let john = user(&*crashed, "john@example.com").await;
    let jane = user(&*crashed, "jane@example.com").await;
    crashed.lock(john).await.expect("lock");
    let partial = crashed.begin_blob().await.expect("blob");
    crashed
        .append_chunk(partial, 0, b"half a message")
        .await
        .expect("chunk");
    let elsewhere = b.open(lock("node2", 60_000)).await;
    elsewhere.lock(jane).await.expect("lock on another node");

    let restarted = b.open(lock("node1", 60_000)).await;
    restarted
        .recover(&Claimant {
            host: "test".into(),
            serve_lock: "test".into(),
        })
        .await
        .expect("recover");
    assert!(
        restarted.lock(john).await.is_ok(),
        "lock of the crashed run freed at once"
    );
    assert!(
        matches!(restarted.lock(jane).await, Err(StoreError::InUse)),
        "another node's lock is kept"
    );
    let m = MessageMeta {
        id: MessageId(0),
        uid: String::new(),
        size: 0,
        blob: partial,
    };
    assert_eq!(
        restarted.read_part(&m, 1).await.expect("read"),
        None,
        "partial body dropped"
    );
}

async fn uids_are_never_reused(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let mut seen = std::collections::HashSet::new();
    for round in 0..3 {
        let john = user(&*s, "john@example.com").await;
        for _ in 0..3 {
            deliver(&*s, b"x\r\n", 64, &[(john, "")]).await;
        }
        let lease = s.lock(john).await.expect("lock");
        let list = s.list(john).await.expect("list");
        for m in &list {
            assert!(
                seen.insert(m.uid.clone()),
                "uid {} reused in round {round}",
                m.uid
            );
        }
        s.commit_update(&lease, &[list[0].id])
            .await
            .expect("update");
        s.remove_user(&addr("john@example.com"))
            .await
            .expect("remove");
    }
}

async fn failure_counters_are_per_key_in_the_order_asked(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let hour = Duration::from_secs(3600);
    async fn counts(s: &dyn Store, keys: &[&str], window: Duration) -> Vec<u64> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        s.count_auth_attempt(&keys, window).await.expect("count").1
    }
    assert_eq!(counts(&*s, &[], hour).await, Vec::<u64>::new());
    let net = "ip:192.0.2.0/24";
    let john = "acct:john@example.com";
    let odd = "acct:o'brien\\\"x\"@example.com";
    assert_eq!(counts(&*s, &[net, john], hour).await, vec![1, 1]);
    assert_eq!(counts(&*s, &[net], hour).await, vec![2]);
    assert_eq!(counts(&*s, &[net, odd], hour).await, vec![3, 1]);
    assert_eq!(
        counts(&*s, &["acct:nobody@example.com", odd, net], hour).await,
        vec![1, 2, 4],
        "one count per key, in the order asked, this attempt included"
    );
    // The same key twice counts twice, as each of the caller's counters is its own question.
    assert_eq!(counts(&*s, &[john, john], hour).await, vec![3, 3]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        counts(&*s, &[net, john], Duration::from_millis(10)).await,
        vec![1, 1],
        "attempts older than the window do not count"
    );
}

/// The attempts in `window` under each of `keys` (distinct), as a probe attempt counts them
/// before it is forgotten.
async fn failures(s: &dyn Store, keys: &[String], window: Duration) -> Vec<u64> {
    let (probe, counts) = s.count_auth_attempt(keys, window).await.expect("count");
    s.forget_auth_attempt(&probe, &[]).await.expect("forget");
    counts.into_iter().map(|n| n - 1).collect()
}

/// Login attempts are counted before their check (`count_auth_attempt`), on two frontends
/// sharing the database: of attempts made at once, the k-th counted sees at least k, so none
/// escapes the penalty of those before it. A success forgets its own rows only, plus the
/// counters it is told to clear.
async fn attempts_made_at_once_see_each_other(b: impl Backend) {
    let s = b.open(lock("a", 60_000)).await;
    let other = b.open(lock("b", 60_000)).await;
    let hour = Duration::from_secs(3600);
    let net = "ip:192.0.2.7".to_string();
    let pair = "ip:192.0.2.7 account:john@example.com".to_string();
    let keys = vec![net.clone(), pair.clone()];
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { s.clone() } else { other.clone() };
            let keys = keys.clone();
            tokio::spawn(async move { store.count_auth_attempt(&keys, hour).await })
        })
        .collect();
    let mut attempts = Vec::new();
    for t in tasks {
        attempts.push(t.await.expect("join").expect("count"));
    }
    let mut seen: Vec<u64> = attempts.iter().map(|(_, counts)| counts[1]).collect();
    seen.sort_unstable();
    for (k, n) in (1..).zip(&seen) {
        assert!(*n >= k, "attempt {k} of 20 at once saw only {n}: {seen:?}");
    }
    assert_eq!(failures(&*s, &keys, hour).await, vec![20, 20]);

    // A success forgets its own rows; with the pair to clear, the pair's too.
    s.forget_auth_attempt(&attempts[0].0, &[])
        .await
        .expect("forget");
    assert_eq!(failures(&*s, &keys, hour).await, vec![19, 19]);
    other
        .forget_auth_attempt(&attempts[1].0, std::slice::from_ref(&pair))
        .await
        .expect("forget");
    assert_eq!(
        failures(&*s, &keys, hour).await,
        vec![18, 0],
        "the network keeps the others' failures"
    );
    s.forget_auth_attempt(&attempts[0].0, &[])
        .await
        .expect("again");
    assert_eq!(
        failures(&*s, &keys, hour).await,
        vec![18, 0],
        "forgetting twice takes nothing more"
    );

    let (none, counts) = s.count_auth_attempt(&[], hour).await.expect("no keys");
    assert!(counts.is_empty());
    s.forget_auth_attempt(&none, &[]).await.expect("forget");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, counts) = s
        .count_auth_attempt(&keys, Duration::from_millis(10))
        .await
        .expect("count");
    assert_eq!(counts, vec![1, 1], "older attempts are outside the window");
}

fn scope_of(names: &[&str]) -> Scope {
    Scope::Domains(names.iter().map(|n| domain(n)).collect())
}

fn now_hour() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    (secs / 3600) as i64
}

fn audit(actor: &str, action: &str, object: &str, domain_name: Option<&str>) -> AuditEntry {
    AuditEntry {
        at: 0,
        actor: actor.into(),
        action: action.into(),
        object: object.into(),
        domain: domain_name.map(domain),
        before: None,
        after: Some("{}".into()),
        ip: Some("192.0.2.1".into()),
        success: true,
    }
}

fn settings(d: &DomainDetail) -> DomainSettings {
    DomainSettings {
        quota: d.quota,
        max_users: d.max_users,
        login_forms: d.login_forms,
        enabled: d.enabled,
    }
}

async fn detail(store: &dyn Store, name: &str) -> DomainDetail {
    store
        .domain_detail(&domain(name))
        .await
        .expect("detail")
        .expect("domain exists")
}

async fn a_domain_admin_sees_nothing_of_other_domains(b: impl Backend) {
    let s = b.open(lock("n1", 60_000)).await;
    let ann = user(&*s, "ann@a.example").await;
    let bob = user(&*s, "bob@b.example").await;
    let a = scope_of(&["a.example"]);
    let none = Scope::Domains(vec![]);

    let page = s.domain_page(&a, "", 0, 10).await.expect("page");
    assert_eq!(page.total, 1);
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].name, domain("a.example"));
    assert_eq!(page.items[0].users, 1);
    assert_eq!(
        s.domain_page(&Scope::All, "", 0, 10)
            .await
            .expect("page")
            .total,
        2
    );
    let page = s.domain_page(&none, "", 0, 10).await.expect("page");
    assert_eq!(
        (page.total, page.items.len()),
        (0, 0),
        "an empty scope matches nothing"
    );
    assert_eq!(
        s.domain_page(&a, "b.example", 0, 10)
            .await
            .expect("page")
            .total,
        0,
        "search does not widen the scope"
    );

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    s.lock(ann).await.expect("lock");
    s.lock(bob).await.expect("lock");
    deliver(&*s, b"hello\r\n", 64, &[(bob, "")]).await;
    let live = s.live_sessions(&a).await.expect("live");
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].address, addr("ann@a.example"));
    assert_eq!(live[0].node, "n1");
    assert!(
        live[0].since >= before - 1_000 && live[0].since <= before + 60_000,
        "since {} vs {before}",
        live[0].since
    );
    assert_eq!(s.live_sessions(&Scope::All).await.expect("live").len(), 2);
    assert!(s.live_sessions(&none).await.expect("live").is_empty());

    let stats = s.hourly_stats(&a, 0).await.expect("stats");
    assert_eq!(
        stats.iter().map(|h| h.delivered).sum::<u64>(),
        0,
        "{stats:?}"
    );
    assert_eq!(stats.iter().map(|h| h.logins).sum::<u64>(), 1, "{stats:?}");
    let stats = s.hourly_stats(&Scope::All, 0).await.expect("stats");
    assert_eq!(
        stats.iter().map(|h| h.delivered).sum::<u64>(),
        1,
        "{stats:?}"
    );
    assert_eq!(stats.iter().map(|h| h.logins).sum::<u64>(), 2, "{stats:?}");
    assert!(s.hourly_stats(&none, 0).await.expect("stats").is_empty());

    s.record_audit(&audit(
        "root@x",
        "domain.create",
        "a.example",
        Some("a.example"),
    ))
    .await
    .expect("audit");
    s.record_audit(&audit(
        "root@x",
        "domain.create",
        "b.example",
        Some("b.example"),
    ))
    .await
    .expect("audit");
    s.record_audit(&audit("root@x", "signin", "root@x", None))
        .await
        .expect("audit");
    let log = s
        .audit_page(&a, &AuditFilter::default(), 0, 10)
        .await
        .expect("audit");
    assert_eq!(log.total, 1);
    assert_eq!(log.items.len(), 1);
    assert_eq!(log.items[0].object, "a.example");
    let log = s
        .audit_page(&Scope::All, &AuditFilter::default(), 0, 10)
        .await
        .expect("audit");
    assert_eq!(log.total, 3);
    assert!(
        s.audit_page(&none, &AuditFilter::default(), 0, 10)
            .await
            .expect("audit")
            .items
            .is_empty()
    );

    let t = s.totals(&a).await.expect("totals");
    assert_eq!((t.domains, t.users, t.sessions), (1, 1, 1), "{t:?}");
    assert_eq!(t.usage, Usage::default());
    assert_eq!(t.quota_bytes, None, "an unlimited domain");
    let t = s.totals(&Scope::All).await.expect("totals");
    assert_eq!((t.domains, t.users, t.sessions), (2, 2, 2), "{t:?}");
    assert_eq!(
        t.usage,
        Usage {
            bytes: 7,
            messages: 1
        }
    );
    let t = s.totals(&none).await.expect("totals");
    assert_eq!(t, Totals::default());
    for (name, bytes) in [("a.example", 1000), ("b.example", 500)] {
        let mut set = settings(&detail(&*s, name).await);
        set.quota.bytes = Some(bytes);
        s.update_domain(&domain(name), &set).await.expect("update");
    }
    assert_eq!(
        s.totals(&Scope::All).await.expect("totals").quota_bytes,
        Some(1500)
    );
    assert_eq!(s.totals(&a).await.expect("totals").quota_bytes, Some(1000));
    assert_eq!(s.totals(&none).await.expect("totals").quota_bytes, None);
}

async fn pages_count_every_match_and_search_ignores_case(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    for name in [
        "gamma.example",
        "alpha.example",
        "beta.example",
        "alphabet.test",
    ] {
        s.add_domain(&domain(name)).await.expect("add");
    }
    let page = s
        .domain_page(&Scope::All, "ALPHA", 0, 1)
        .await
        .expect("page");
    assert_eq!(page.total, 2);
    assert_eq!(
        page.items
            .iter()
            .map(|d| d.name.clone())
            .collect::<Vec<_>>(),
        vec![domain("alpha.example")]
    );
    let page = s
        .domain_page(&Scope::All, "alpha", 1, 1)
        .await
        .expect("page");
    assert_eq!(page.total, 2);
    assert_eq!(page.items[0].name, domain("alphabet.test"));
    let page = s
        .domain_page(&Scope::All, "alpha", 5, 10)
        .await
        .expect("page");
    assert_eq!(
        (page.total, page.items.len()),
        (2, 0),
        "past the end still counts"
    );
    let page = s.domain_page(&Scope::All, "", 0, 10).await.expect("page");
    assert_eq!(page.total, 4);
    let names: Vec<String> = page.items.iter().map(|d| d.name.to_string()).collect();
    assert_eq!(
        names,
        [
            "alpha.example",
            "alphabet.test",
            "beta.example",
            "gamma.example"
        ]
    );
    assert_eq!(
        s.domain_page(&Scope::All, "%", 0, 10)
            .await
            .expect("page")
            .total,
        0,
        "no wildcards"
    );

    for local in ["zed", "amy", "Amos", "bert"] {
        user(&*s, &format!("{local}@alpha.example")).await;
    }
    let page = s
        .user_page(&domain("alpha.example"), "AM", 0, 10)
        .await
        .expect("users");
    assert_eq!(page.total, 2);
    let locals: Vec<String> = page
        .items
        .iter()
        .map(|u| u.address.local.to_string())
        .collect();
    assert_eq!(locals, ["amos", "amy"]);
    let page = s
        .user_page(&domain("alpha.example"), "", 1, 2)
        .await
        .expect("users");
    assert_eq!(page.total, 4);
    let locals: Vec<String> = page
        .items
        .iter()
        .map(|u| u.address.local.to_string())
        .collect();
    assert_eq!(locals, ["amy", "bert"]);
    assert!(
        page.items
            .iter()
            .all(|u| u.enabled && u.created_at > 1_600_000_000_000)
    );
    assert!(matches!(
        s.user_page(&domain("nowhere.example"), "", 0, 10).await,
        Err(StoreError::NotFound(_))
    ));
    let amy = s
        .user_detail(&addr("amy@alpha.example"))
        .await
        .expect("detail")
        .expect("amy");
    assert_eq!(amy.address, addr("amy@alpha.example"));
    assert!(amy.enabled);
    assert!(
        s.user_detail(&addr("nobody@alpha.example"))
            .await
            .expect("detail")
            .is_none()
    );

    // Details and settings.
    s.add_alias(&domain("alpha.net"), &domain("alpha.example"))
        .await
        .expect("alias");
    s.add_alias(&domain("alpha.biz"), &domain("alpha.example"))
        .await
        .expect("alias");
    let d = detail(&*s, "alpha.example").await;
    assert_eq!(d.aliases, vec![domain("alpha.biz"), domain("alpha.net")]);
    assert_eq!(d.users, 4);
    assert_eq!(d.max_users, None);
    assert!(d.enabled && !d.allow_apop);
    assert_eq!(d.login_forms, LoginForms::all());
    assert!(
        s.domain_detail(&domain("alpha.net"))
            .await
            .expect("detail")
            .is_none(),
        "an alias is not a domain"
    );
    let new = DomainSettings {
        quota: Quota {
            bytes: Some(10_000),
            messages: Some(50),
        },
        max_users: Some(9),
        login_forms: LoginForms::parse("at").expect("forms"),
        enabled: false,
    };
    s.update_domain(&domain("alpha.example"), &new)
        .await
        .expect("update");
    assert_eq!(settings(&detail(&*s, "alpha.example").await), new);
    assert!(
        detail(&*s, "beta.example").await.enabled,
        "others untouched"
    );
    assert!(matches!(
        s.update_domain(&domain("alpha.net"), &new).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn disabled_accounts_cannot_log_in_but_still_get_mail(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@example.com").await;
    s.add_alias(&domain("example.net"), &domain("example.com"))
        .await
        .expect("alias");
    let john_addr = addr("john@example.com");
    s.set_user_enabled(&john_addr, false)
        .await
        .expect("disable");
    assert!(s.find_user(&john_addr).await.expect("find").is_none());
    assert!(s.find_apop_user(&john_addr).await.expect("find").is_none());
    assert_eq!(
        s.find_recipient(&john_addr).await.expect("rcpt"),
        Some(john)
    );
    assert_eq!(
        s.accept_recipient(&john_addr, None).await.expect("rcpt"),
        Some(john),
        "a disabled account still receives mail"
    );
    assert!(
        !s.user_detail(&john_addr)
            .await
            .expect("detail")
            .expect("john")
            .enabled
    );
    assert!(deliver(&*s, b"x", 64, &[(john, "")]).await[0].is_ok());
    s.set_user_enabled(&john_addr, true).await.expect("enable");
    assert_eq!(
        s.find_user(&john_addr).await.expect("find").map(|u| u.id),
        Some(john)
    );
    assert!(matches!(
        s.set_user_enabled(&addr("nobody@example.com"), false).await,
        Err(StoreError::NotFound(_))
    ));

    let mut set = settings(&detail(&*s, "example.com").await);
    set.enabled = false;
    s.update_domain(&domain("example.com"), &set)
        .await
        .expect("disable domain");
    assert!(s.find_user(&john_addr).await.expect("find").is_none());
    assert!(s.find_apop_user(&john_addr).await.expect("find").is_none());
    assert_eq!(
        s.find_recipient(&addr("john@example.net"))
            .await
            .expect("rcpt"),
        Some(john),
        "delivery through an alias of a disabled domain"
    );
    assert!(deliver(&*s, b"y", 64, &[(john, "")]).await[0].is_ok());
    assert_eq!(s.list(john).await.expect("list").len(), 2);
    set.enabled = true;
    s.update_domain(&domain("example.com"), &set)
        .await
        .expect("enable domain");
    assert!(s.find_apop_user(&john_addr).await.expect("find").is_some());
}

async fn a_domain_cannot_exceed_its_user_limit(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    user(&*s, "one@example.com").await;
    user(&*s, "x@example.org").await;
    let mut set = settings(&detail(&*s, "example.com").await);
    set.max_users = Some(2);
    s.update_domain(&domain("example.com"), &set)
        .await
        .expect("limit");
    assert_eq!(detail(&*s, "example.com").await.max_users, Some(2));
    s.add_user(&addr("two@example.com"), "h", None)
        .await
        .expect("second");
    match s.add_user(&addr("three@example.com"), "h", None).await {
        Err(StoreError::Conflict(msg)) => {
            assert_eq!(msg, "domain example.com has reached its limit of 2 users")
        }
        other => panic!("expected the limit, got {other:?}"),
    }
    assert_eq!(detail(&*s, "example.com").await.users, 2);
    s.add_user(&addr("y@example.org"), "h", None)
        .await
        .expect("other domains are not limited");
    s.remove_user(&addr("one@example.com"))
        .await
        .expect("remove");
    s.add_user(&addr("three@example.com"), "h", None)
        .await
        .expect("room again");
    set.max_users = None;
    s.update_domain(&domain("example.com"), &set)
        .await
        .expect("unlimit");
    s.add_user(&addr("four@example.com"), "h", None)
        .await
        .expect("unlimited");
}

async fn admin_accounts(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    s.add_domain(&domain("b.example")).await.expect("add");
    s.add_domain(&domain("a.example")).await.expect("add");
    assert_eq!(s.count_admins().await.expect("count"), 0);
    let root = s
        .add_admin("root@example.com", "$argon2id$root", &Scope::All)
        .await
        .expect("super");
    let tenant = s
        .add_admin(
            "ten@example.com",
            "$argon2id$ten",
            &scope_of(&["b.example", "a.example"]),
        )
        .await
        .expect("tenant");
    assert_ne!(root, tenant);
    assert_eq!(s.count_admins().await.expect("count"), 2);
    let found = s
        .find_admin("ten@example.com")
        .await
        .expect("find")
        .expect("tenant");
    assert_eq!(found.id, tenant);
    assert_eq!(found.password_hash, "$argon2id$ten");
    assert_eq!(found.scope, scope_of(&["a.example", "b.example"]), "sorted");
    let by_id = s.admin_by_id(root).await.expect("by id").expect("root");
    assert_eq!(by_id.email, "root@example.com");
    assert_eq!(by_id.scope, Scope::All);
    assert!(
        s.find_admin("nobody@example.com")
            .await
            .expect("find")
            .is_none()
    );
    assert!(s.admin_by_id(AdminId(-5)).await.expect("by id").is_none());
    match s.add_admin("root@example.com", "h", &Scope::All).await {
        Err(StoreError::Conflict(msg)) => assert_eq!(msg, "admin root@example.com already exists"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        s.add_admin(
            "new@example.com",
            "h",
            &scope_of(&["a.example", "nowhere.example"])
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        s.find_admin("new@example.com")
            .await
            .expect("find")
            .is_none(),
        "a failed add leaves nothing behind"
    );
    assert_eq!(s.count_admins().await.expect("count"), 2);
}

async fn admin_sessions_expire(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let root = s
        .add_admin("root@example.com", "h", &Scope::All)
        .await
        .expect("admin");
    s.create_admin_session("old", root, "csrf1", 1_000)
        .await
        .expect("create");
    s.create_admin_session("idle", root, "csrf2", 2_000)
        .await
        .expect("create");
    assert_eq!(
        s.admin_session("old").await.expect("get"),
        Some(AdminSession {
            admin: root,
            csrf: "csrf1".into(),
            created_at: 1_000,
            last_seen: 1_000
        })
    );
    s.touch_admin_session("old", 5_000).await.expect("touch");
    let got = s.admin_session("old").await.expect("get").expect("old");
    assert_eq!((got.created_at, got.last_seen), (1_000, 5_000));
    assert!(s.admin_session("nope").await.expect("get").is_none());

    s.prune_admin_sessions(3_000, 0).await.expect("prune idle");
    assert!(
        s.admin_session("idle").await.expect("get").is_none(),
        "idle pruned"
    );
    assert!(
        s.admin_session("old").await.expect("get").is_some(),
        "recently seen kept"
    );
    s.prune_admin_sessions(0, 1_000).await.expect("prune");
    assert!(
        s.admin_session("old").await.expect("get").is_some(),
        "created at the limit kept"
    );
    s.prune_admin_sessions(0, 1_001).await.expect("prune old");
    assert!(
        s.admin_session("old").await.expect("get").is_none(),
        "too old pruned"
    );

    s.create_admin_session("x", root, "c", 10)
        .await
        .expect("create");
    s.delete_admin_session("x").await.expect("delete");
    assert!(s.admin_session("x").await.expect("get").is_none());
}

async fn api_tokens_belong_to_their_admin(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let root = s
        .add_admin("root@example.com", "h", &Scope::All)
        .await
        .expect("admin");
    let other = s
        .add_admin("other@example.com", "h", &Scope::All)
        .await
        .expect("admin");
    let t1 = s
        .add_api_token(root, "ci", "hash1", 100)
        .await
        .expect("token");
    let t2 = s
        .add_api_token(root, "backup", "hash2", 200)
        .await
        .expect("token");
    let t3 = s
        .add_api_token(other, "mine", "hash3", 300)
        .await
        .expect("token");
    assert_eq!(
        s.list_api_tokens(root).await.expect("list"),
        vec![
            ApiToken {
                id: t1,
                name: "ci".into(),
                created_at: 100,
                last_used: None,
                expires_at: None,
                read_only: false,
            },
            ApiToken {
                id: t2,
                name: "backup".into(),
                created_at: 200,
                last_used: None,
                expires_at: None,
                read_only: false,
            },
        ]
    );
    assert_eq!(
        s.use_api_token("hash1", 555)
            .await
            .expect("use")
            .map(|t| t.admin),
        Some(root)
    );
    assert_eq!(
        s.use_api_token("hash3", 556)
            .await
            .expect("use")
            .map(|t| t.admin),
        Some(other)
    );
    assert_eq!(s.use_api_token("bogus", 557).await.expect("use"), None);
    assert_eq!(
        s.list_api_tokens(root).await.expect("list")[0].last_used,
        Some(555)
    );
    assert!(matches!(
        s.revoke_api_token(root, t3).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.use_api_token("hash3", 600)
            .await
            .expect("use")
            .map(|t| t.admin),
        Some(other),
        "another admin's token survives"
    );
    s.revoke_api_token(root, t1).await.expect("revoke");
    assert_eq!(s.use_api_token("hash1", 700).await.expect("use"), None);
    assert_eq!(s.list_api_tokens(root).await.expect("list").len(), 1);
    assert!(matches!(
        s.revoke_api_token(root, t1).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn a_broken_lock_is_reported_at_renewal(b: impl Backend) {
    let clock = LeaseClock::default();
    let s = b.open(timed("n1", 60_000, &clock)).await;
    let john = user(&*s, "john@example.com").await;
    let jane = user(&*s, "jane@example.com").await;
    let lease = s.lock(john).await.expect("lock");
    let kept = s.lock(jane).await.expect("lock");
    assert!(s.renew_leases().await.expect("renew").is_empty());
    assert!(
        s.break_lock(&addr("john@example.com"))
            .await
            .expect("break")
    );
    assert!(
        !s.break_lock(&addr("john@example.com"))
            .await
            .expect("break")
    );
    assert!(
        !s.break_lock(&addr("nobody@example.com"))
            .await
            .expect("break")
    );
    let live = s.live_sessions(&Scope::All).await.expect("live");
    assert_eq!(
        live.iter().map(|l| l.address.clone()).collect::<Vec<_>>(),
        vec![addr("jane@example.com")]
    );
    assert_eq!(s.renew_leases().await.expect("renew"), vec![lease.token]);
    assert!(
        s.renew_leases().await.expect("renew").is_empty(),
        "reported once"
    );
    assert!(matches!(
        s.commit_update(&lease, &[]).await,
        Err(StoreError::LeaseLost)
    ));
    s.lock(john).await.expect("free again");
    s.unlock(&kept).await.expect("unlock");

    // A lock whose holder stopped renewing is no live session.
    let stalled = b.open(timed("n2", 10_000, &clock)).await;
    let ann = user(&*s, "ann@example.com").await;
    stalled.lock(ann).await.expect("lock");
    clock.advance(Duration::from_secs(9));
    assert_eq!(s.totals(&Scope::All).await.expect("totals").sessions, 2);
    clock.advance(Duration::from_secs(2));
    let live = s.live_sessions(&Scope::All).await.expect("live");
    assert_eq!(
        live.iter().map(|l| l.address.clone()).collect::<Vec<_>>(),
        vec![addr("john@example.com")]
    );
    assert_eq!(s.totals(&Scope::All).await.expect("totals").sessions, 1);
}

async fn hourly_stats_count_deliveries_and_logins(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let start = now_hour();
    let john = user(&*s, "john@example.com").await;
    let jane = user(&*s, "jane@example.com").await;
    let full = user(&*s, "full@example.com").await;
    s.set_user_quota(
        &addr("full@example.com"),
        QuotaChange {
            bytes: Some(Some(1)),
            messages: None,
        },
    )
    .await
    .expect("quota");
    assert!(
        s.hourly_stats(&Scope::All, 0)
            .await
            .expect("stats")
            .is_empty()
    );
    let out = deliver(&*s, b"hello\r\n", 64, &[(john, ""), (jane, ""), (full, "")]).await;
    assert!(out[0].is_ok() && out[1].is_ok() && out[2].is_err());
    let lease = s.lock(john).await.expect("lock");
    assert!(matches!(s.lock(john).await, Err(StoreError::InUse)));
    let end = now_hour();
    let stats = s.hourly_stats(&Scope::All, start).await.expect("stats");
    assert!(
        stats.iter().all(|h| (start..=end).contains(&h.hour)),
        "{stats:?}"
    );
    assert_eq!(
        stats.iter().map(|h| h.delivered).sum::<u64>(),
        2,
        "{stats:?}"
    );
    assert_eq!(stats.iter().map(|h| h.logins).sum::<u64>(), 1, "{stats:?}");
    assert!(
        s.hourly_stats(&Scope::All, end + 1)
            .await
            .expect("stats")
            .is_empty(),
        "hours before since_hour are left out"
    );
    // A login in an hour and domain with no activity yet.
    let other = user(&*s, "ann@other.example").await;
    s.lock(other).await.expect("lock");
    let stats = s
        .hourly_stats(&scope_of(&["other.example"]), start)
        .await
        .expect("stats");
    assert_eq!(stats.iter().map(|h| h.logins).sum::<u64>(), 1, "{stats:?}");
    assert_eq!(
        stats.iter().map(|h| h.delivered).sum::<u64>(),
        0,
        "{stats:?}"
    );
    s.commit_update(&lease, &[]).await.expect("update");
    s.lock(john).await.expect("lock again");
    let stats = s.hourly_stats(&Scope::All, start).await.expect("stats");
    assert_eq!(stats.iter().map(|h| h.logins).sum::<u64>(), 3, "{stats:?}");
}

async fn the_audit_log_is_newest_first_and_filters(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    s.add_domain(&domain("a.example")).await.expect("add");
    s.add_domain(&domain("b.example")).await.expect("add");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    s.record_audit(&audit(
        "Root@X",
        "domain.create",
        "a.example",
        Some("a.example"),
    ))
    .await
    .expect("audit");
    s.record_audit(&audit(
        "ten@a.example",
        "user.create",
        "bob@a.example",
        Some("a.example"),
    ))
    .await
    .expect("audit");
    let mut failed = audit("mallory", "signin", "mallory", None);
    failed.success = false;
    failed.after = None;
    s.record_audit(&failed).await.expect("audit");
    s.record_audit(&audit(
        "root@x",
        "user.create",
        "eve@b.example",
        Some("b.example"),
    ))
    .await
    .expect("audit");

    let all = s
        .audit_page(&Scope::All, &AuditFilter::default(), 0, 10)
        .await
        .expect("page");
    assert_eq!(all.total, 4);
    let objects: Vec<&str> = all.items.iter().map(|e| e.object.as_str()).collect();
    assert_eq!(
        objects,
        ["eve@b.example", "mallory", "bob@a.example", "a.example"]
    );
    assert!(
        all.items
            .iter()
            .all(|e| e.at >= before - 1_000 && e.at < before + 60_000)
    );
    assert_eq!(all.items[1], {
        let mut e = failed.clone();
        e.at = all.items[1].at;
        e
    });
    let page = s
        .audit_page(&Scope::All, &AuditFilter::default(), 1, 2)
        .await
        .expect("page");
    assert_eq!(page.total, 4);
    assert_eq!(page.items[0].object, "mallory");
    assert_eq!(page.items.len(), 2);

    let filter = AuditFilter {
        actor: "ROOT".into(),
        action: "".into(),
        object: "".into(),
    };
    let page = s
        .audit_page(&Scope::All, &filter, 0, 10)
        .await
        .expect("page");
    assert_eq!(page.total, 2, "{page:?}");
    let filter = AuditFilter {
        actor: "".into(),
        action: "user.".into(),
        object: "A.EXAMPLE".into(),
    };
    let page = s
        .audit_page(&Scope::All, &filter, 0, 10)
        .await
        .expect("page");
    assert_eq!(page.total, 1);
    assert_eq!(page.items[0].object, "bob@a.example");
    let page = s
        .audit_page(&scope_of(&["a.example"]), &AuditFilter::default(), 0, 10)
        .await
        .expect("page");
    assert_eq!(page.total, 2);
    assert!(
        page.items
            .iter()
            .all(|e| e.domain == Some(domain("a.example")))
    );
}

/// `list`: every message of the maildrop and no other's, by id, with its size, blob and uid
/// exactly (odd but valid uids included), and an empty maildrop lists nothing.
async fn the_listing_is_exact_and_in_id_order(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@example.com").await;
    let jane = user(&*s, "jane@example.com").await;
    assert!(s.list(john).await.expect("list").is_empty());
    let odd = r##"!"#$%&'()*+,-./0:;<=>?@[\]^_`{|}~"##;
    let long = "u".repeat(70);
    let batch: Vec<ImportMessage> = [
        (odd, "a\r\n"),
        (long.as_str(), "d\r\n"),
        ("x", "b\r\n\r\nc\r\n"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (uid, body))| ImportMessage {
        key: format!("k{i}"),
        uid: Some((*uid).into()),
        data: body.as_bytes().to_vec(),
    })
    .collect();
    s.import(john, &batch).await.expect("import");
    assert!(deliver(&*s, b"to both\r\n", 4, &[(john, "P: 1\r\n"), (jane, "")]).await[0].is_ok());
    assert!(deliver(&*s, &[b'z'; 300], 128, &[(john, "")]).await[0].is_ok());
    let listed = s.list(john).await.expect("list");
    assert_eq!(listed.len(), 5);
    assert!(
        listed.windows(2).all(|w| w[0].id.0 < w[1].id.0),
        "{listed:?}"
    );
    let uids: Vec<&str> = listed.iter().map(|m| m.uid.as_str()).collect();
    assert_eq!(&uids[..3], [odd, long.as_str(), "x"]);
    for m in &listed {
        assert_eq!(read_all(&*s, m).await.len() as u64, m.size, "{m:?}");
    }
    assert_eq!((listed[3].size, listed[4].size), (15, 300));
    let jane_listed = s.list(jane).await.expect("list");
    assert_eq!(jane_listed.len(), 1);
    assert_eq!(
        jane_listed[0].blob, listed[3].blob,
        "one body, two messages"
    );
    assert_ne!(listed[3].blob, listed[4].blob);
    assert_ne!(jane_listed[0].id, listed[3].id);
}

/// `read_parts`: any run of parts, from the header block on or from any body part, is what
/// `read_part` gives one by one; short at the end of the message, empty past it.
async fn several_parts_read_at_once_equal_the_parts_one_by_one(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@example.com").await;
    let body: Vec<u8> = (0..5_000u32)
        .flat_map(|i| format!("{i}\r\n").into_bytes())
        .collect();
    assert!(deliver(&*s, &body, 1000, &[(john, "P: 1\r\n")]).await[0].is_ok());
    let m = s.list(john).await.expect("list").remove(0);
    let mut one_by_one = Vec::new();
    while let Some(data) = s
        .read_part(&m, one_by_one.len() as u32)
        .await
        .expect("read")
    {
        one_by_one.push(data);
    }
    let n = one_by_one.len() as u32;
    assert!(n > 3, "{n} parts");
    for first in 0..=n + 1 {
        for count in [0, 1, 2, 3, n, n + 5] {
            let got = s.read_parts(&m, first, count).await.expect("read_parts");
            let from = (first as usize).min(one_by_one.len());
            let to = (first.saturating_add(count) as usize).min(one_by_one.len());
            assert_eq!(got, one_by_one[from..to], "parts {first} + {count}");
        }
    }
    // A message with an empty body is its header block alone.
    assert!(deliver(&*s, b"", 1000, &[(john, "P: 2\r\n")]).await[0].is_ok());
    let empty = s.list(john).await.expect("list").remove(1);
    let got = s.read_parts(&empty, 0, 2).await.expect("read_parts");
    assert_eq!(got, vec![b"P: 2\r\n".to_vec()]);
}

/// An imported hash keeps its scheme until a login upgrades it; the upgrade happens only while
/// the user still holds the hash the login verified; scheme counts follow the admin's scope.
async fn legacy_hashes_are_counted_and_upgraded_once(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    for d in ["example.com", "example.org"] {
        s.add_domain(&DomainName::parse(d).expect("domain"))
            .await
            .expect("add");
    }
    let legacy = "{SHA512-CRYPT}$6$salt$hash";
    let john = s
        .add_user(&addr("john@example.com"), legacy, None)
        .await
        .expect("add");
    s.add_user(&addr("jane@example.com"), "{SSHA}abc", None)
        .await
        .expect("add");
    s.add_user(&addr("joe@example.org"), "$argon2id$native", None)
        .await
        .expect("add");
    s.set_password(&addr("joe@example.org"), "{SSHA}def", None)
        .await
        .expect("passwd");
    let scheme = |d: Option<UserDetail>| d.expect("exists").password_scheme;
    let detail = s
        .user_detail(&addr("john@example.com"))
        .await
        .expect("detail");
    assert_eq!(scheme(detail).as_deref(), Some("SHA512-CRYPT"));
    let count = |v: &[(&str, u64)]| {
        v.iter()
            .map(|(n, c)| ((*n).to_string(), *c))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        s.legacy_schemes(&Scope::All).await.expect("schemes"),
        count(&[("SHA512-CRYPT", 1), ("SSHA", 2)])
    );
    let org = Scope::Domains(vec![DomainName::parse("example.org").expect("domain")]);
    assert_eq!(
        s.legacy_schemes(&org).await.expect("schemes"),
        count(&[("SSHA", 1)])
    );
    // A login that verified an older hash does not overwrite a password set since.
    assert!(
        !s.upgrade_password(
            john,
            "{SHA512-CRYPT}$6$other$x",
            "$argon2id$new",
            "SCRAM-SHA-256$v"
        )
        .await
        .expect("upgrade")
    );
    assert!(
        s.upgrade_password(john, legacy, "$argon2id$new", "SCRAM-SHA-256$v")
            .await
            .expect("upgrade")
    );
    let found = s
        .find_user(&addr("john@example.com"))
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.password_hash, "$argon2id$new");
    assert_eq!(found.scram.as_deref(), Some("SCRAM-SHA-256$v"));
    let detail = s
        .user_detail(&addr("john@example.com"))
        .await
        .expect("detail");
    assert_eq!(scheme(detail), None);
    assert_eq!(
        s.legacy_schemes(&Scope::All).await.expect("schemes"),
        count(&[("SSHA", 2)])
    );
}

/// A domain in migration mode: its users are not migrated until recorded, the domain's policy
/// names the old server (for logins through an alias too), and the domain counts the moved.
async fn migration_mode_is_per_domain_and_counts_moved_users(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let domain = DomainName::parse("example.com").expect("domain");
    s.add_domain(&domain).await.expect("add");
    let alias = DomainName::parse("example.net").expect("domain");
    s.add_alias(&alias, &domain).await.expect("alias");
    let john = s
        .add_user(&addr("john@example.com"), "h", None)
        .await
        .expect("add");
    s.add_user(&addr("jane@example.com"), "h", None)
        .await
        .expect("add");
    let migrated = |s: Arc<dyn Store>, a: &'static str| async move {
        s.find_user(&addr(a))
            .await
            .expect("find")
            .expect("exists")
            .migrated
    };
    assert!(
        migrated(s.clone(), "john@example.com").await,
        "outside migration mode"
    );
    let url = "pop3s://old.example.net:995";
    s.set_migrate_from(&domain, Some(url)).await.expect("set");
    let policy = s
        .domain_policy(&alias)
        .await
        .expect("policy")
        .expect("exists");
    assert_eq!(policy.migrate_from.as_deref(), Some(url));
    assert!(!migrated(s.clone(), "john@example.com").await);
    s.finish_migration(john).await.expect("finish");
    assert!(migrated(s.clone(), "john@example.com").await);
    assert!(!migrated(s.clone(), "jane@example.com").await);
    let d = s
        .domain_detail(&domain)
        .await
        .expect("detail")
        .expect("exists");
    assert_eq!(
        (d.migrate_from.as_deref(), d.migrated_users, d.users),
        (Some(url), 1, 2)
    );
    s.set_migrate_from(&domain, None).await.expect("clear");
    assert!(migrated(s.clone(), "jane@example.com").await);
    assert!(
        s.set_migrate_from(&DomainName::parse("nope.example").expect("d"), None)
            .await
            .is_err()
    );
}

macro_rules! stories {
    ($($story:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $story() {
                    super::$story(Sqlite::new()).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test]
                async fn $story() {
                    super::$story(Pg::new()).await;
                }
            )*
        }
    };
}

stories!(
    provisioning,
    delivery_stores_one_body_and_streams_it_back,
    quotas_are_checked_per_recipient_and_usage_is_exact,
    the_lock_is_exclusive_expires_and_fences,
    a_lease_given_up_is_not_renewed,
    aliases_and_login_forms,
    a_restart_frees_the_previous_runs_locks_and_partial_bodies,
    uids_are_never_reused,
    apop_secrets_and_domain_switch,
    a_domain_admin_sees_nothing_of_other_domains,
    pages_count_every_match_and_search_ignores_case,
    disabled_accounts_cannot_log_in_but_still_get_mail,
    a_domain_cannot_exceed_its_user_limit,
    admin_accounts,
    admin_sessions_expire,
    api_tokens_belong_to_their_admin,
    a_broken_lock_is_reported_at_renewal,
    hourly_stats_count_deliveries_and_logins,
    the_audit_log_is_newest_first_and_filters,
    domain_policies_round_trip_and_are_validated,
    a_user_quota_lies_inside_the_domains,
    a_full_mailbox_is_refused_at_rcpt_permanently_or_temporarily,
    the_quota_warning_is_sent_once_per_crossing,
    parallel_deliveries_never_exceed_a_quota,
    retention_deletes_old_mail_in_batches_but_not_in_open_maildrops,
    login_delay_refuses_early_logins,
    import_keeps_uids_reports_bad_ones_and_is_idempotent,
    the_listing_is_exact_and_in_id_order,
    several_parts_read_at_once_equal_the_parts_one_by_one,
    failure_counters_are_per_key_in_the_order_asked,
    attempts_made_at_once_see_each_other,
    legacy_hashes_are_counted_and_upgraded_once,
    migration_mode_is_per_domain_and_counts_moved_users,
);

// Declared after `stories!` so the module can use the macro.
mod activity;
mod admins;
mod alarm;
mod app_passwords;
mod bin;
mod bulk;
mod bulletins;
mod dashboard;
mod dedup;
mod oauth;
mod search;
mod self_service;
mod traces;

//! The store conformance suite: every behaviour the frontends rely on, written once against the
//! traits. Each `story` takes a `Backend` that opens stores on one database; SQLite runs always
//! (a real file in a temp dir), Postgres on a database of its own per test (see `pgtest`).

use std::sync::Arc;
use std::time::Duration;

use mailstore::*;

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
    LockOptions {
        node: node.into(),
        ttl: Duration::from_millis(ttl_ms),
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
    let blob = store.begin_blob().await.expect("blob");
    for (seq, part) in body.chunks(chunk).enumerate() {
        store
            .append_chunk(blob, seq as u32, part)
            .await
            .expect("chunk");
    }
    let recipients: Vec<Recipient> = to
        .iter()
        .map(|(u, prefix)| Recipient {
            user: *u,
            prefix: prefix.as_bytes().to_vec(),
        })
        .collect();
    store
        .deliver(blob, body.len() as u64, &recipients)
        .await
        .expect("deliver")
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
    let s = b.open(lock("a", 400)).await;
    let john = user(&*s, "john@example.com").await;
    deliver(&*s, b"one\r\n", 64, &[(john, "")]).await;
    deliver(&*s, b"two\r\n", 64, &[(john, "")]).await;
    let first = s.lock(john).await.expect("lock");
    assert!(matches!(s.lock(john).await, Err(StoreError::InUse)));
    s.unlock(&first).await.expect("unlock");
    let held = s.lock(john).await.expect("lock again");

    // Renewal keeps a live session's lease past its TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.renew_leases().await.expect("renew");
    }
    assert!(matches!(s.lock(john).await, Err(StoreError::InUse)));

    // A holder that stops renewing loses the maildrop after the TTL; its UPDATE then changes nothing.
    let other = b.open(lock("b", 400)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
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
            login_forms: LoginForms::all()
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
    let s = b.open(lock("a", 400)).await;
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
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.renew_leases().await.expect("renew");
    }
    let other = b.open(lock("b", 400)).await;
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
    restarted.recover().await.expect("recover");
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
);

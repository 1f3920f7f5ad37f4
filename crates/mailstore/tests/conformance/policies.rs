//! Stories of issue 6: mailbox policies, quotas end to end, the retention job, LOGIN-DELAY and
//! import, on both backends.

use super::*;

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn set_policies(s: &dyn Store, name: &str, f: impl FnOnce(&mut DomainPolicies)) {
    let d = domain(name);
    let mut p = s.domain_policies(&d).await.expect("policies");
    f(&mut p);
    s.set_domain_policies(&d, &p).await.expect("set policies");
}

async fn uids(s: &dyn Store, user: UserId) -> Vec<String> {
    s.list(user)
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.uid)
        .collect()
}

pub(crate) async fn domain_policies_round_trip_and_are_validated(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@a.example").await;
    user(&*s, "jane@b.example").await;
    let a = domain("a.example");
    assert_eq!(
        s.domain_policies(&a).await.expect("defaults"),
        DomainPolicies::default()
    );
    assert_eq!(
        s.policy_summary().await.expect("summary"),
        PolicySummary::default()
    );
    let p = DomainPolicies {
        quota_tempfail: true,
        quota_warn_percent: Some(80),
        retention_days: Some(30),
        login_delay_secs: Some(900),
    };
    s.set_domain_policies(&a, &p).await.expect("set");
    assert_eq!(s.domain_policies(&a).await.expect("get"), p);
    assert_eq!(
        s.user_policy(john).await.expect("user policy"),
        UserPolicy {
            retention_days: Some(30),
            login_delay_secs: Some(900)
        }
    );
    // b.example has neither: before login the shortest is shown, with USER (they differ).
    assert_eq!(
        s.policy_summary().await.expect("summary"),
        PolicySummary {
            min_retention_days: Some(30),
            retention_varies: true,
            min_login_delay_secs: Some(900),
            login_delay_varies: true,
        }
    );
    set_policies(&*s, "b.example", |p| {
        p.retention_days = Some(7);
        p.login_delay_secs = Some(900);
    })
    .await;
    let sum = s.policy_summary().await.expect("summary");
    assert_eq!(sum.min_retention_days, Some(7));
    assert!(sum.retention_varies);
    assert!(!sum.login_delay_varies);

    for bad in [
        DomainPolicies {
            quota_warn_percent: Some(0),
            ..p
        },
        DomainPolicies {
            quota_warn_percent: Some(101),
            ..p
        },
        DomainPolicies {
            retention_days: Some(0),
            ..p
        },
        DomainPolicies {
            login_delay_secs: Some(0),
            ..p
        },
    ] {
        assert!(
            matches!(
                s.set_domain_policies(&a, &bad).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(s.domain_policies(&a).await.expect("unchanged"), p);
    assert!(matches!(
        s.set_domain_policies(&domain("nope.example"), &p).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn a_user_quota_lies_inside_the_domains(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    user(&*s, "john@example.com").await;
    let d = domain("example.com");
    let q = |bytes: Option<u64>, messages: Option<u64>| QuotaChange {
        bytes: Some(bytes),
        messages: Some(messages),
    };
    s.set_domain_quota(&d, q(Some(1000), Some(10)))
        .await
        .expect("domain");
    s.set_user_quota(&addr("john@example.com"), q(Some(1000), Some(5)))
        .await
        .expect("inside");
    assert!(matches!(
        s.set_user_quota(&addr("john@example.com"), q(Some(1001), Some(5)))
            .await,
        Err(StoreError::QuotaOutsideDomain {
            users: 1,
            bytes: true,
            messages: false
        })
    ));
    assert!(matches!(
        s.set_user_quota(&addr("john@example.com"), q(Some(10), Some(11)))
            .await,
        Err(StoreError::QuotaOutsideDomain {
            users: 1,
            bytes: false,
            messages: true
        })
    ));
    // Lowering the domain below a user's limit is refused too, in both edit paths.
    assert!(matches!(
        s.set_domain_quota(&d, q(Some(999), Some(10))).await,
        Err(StoreError::QuotaOutsideDomain {
            bytes: true,
            messages: false,
            ..
        })
    ));
    let mut settings = settings(&detail(&*s, "example.com").await);
    settings.quota.messages = Some(4);
    assert!(matches!(
        s.update_domain(&d, &settings).await,
        Err(StoreError::QuotaOutsideDomain {
            bytes: false,
            messages: true,
            ..
        })
    ));
    let kept = detail(&*s, "example.com").await.quota;
    assert_eq!((kept.bytes, kept.messages), (Some(1000), Some(10)));
    // An unlimited user in a limited domain is bounded by the domain.
    s.set_user_quota(&addr("john@example.com"), q(None, None))
        .await
        .expect("unlimited user");
}

pub(crate) async fn a_full_mailbox_is_refused_at_rcpt_permanently_or_temporarily(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@example.com").await;
    s.set_user_quota(
        &addr("john@example.com"),
        QuotaChange {
            bytes: Some(Some(100)),
            messages: Some(Some(2)),
        },
    )
    .await
    .expect("quota");
    set_policies(&*s, "example.com", |p| p.quota_warn_percent = None).await;
    let john_at = addr("john@example.com");
    assert_eq!(
        s.accept_recipient(&john_at, None).await.expect("room"),
        Some(john)
    );
    assert_eq!(
        s.accept_recipient(&addr("nobody@example.com"), None)
            .await
            .expect("lookup"),
        None
    );
    assert!(matches!(
        s.accept_recipient(&john_at, Some(101)).await,
        Err(StoreError::QuotaExceeded)
    ));
    assert!(deliver(&*s, &[b'x'; 60], 64, &[(john, "")]).await[0].is_ok());
    assert_eq!(
        s.accept_recipient(&john_at, Some(40))
            .await
            .expect("40 fit"),
        Some(john)
    );
    assert!(matches!(
        s.accept_recipient(&john_at, Some(41)).await,
        Err(StoreError::QuotaExceeded)
    ));
    assert!(matches!(
        deliver(&*s, &[b'x'; 41], 64, &[(john, "")]).await[0],
        Err(StoreError::QuotaExceeded)
    ));
    set_policies(&*s, "example.com", |p| p.quota_tempfail = true).await;
    assert!(matches!(
        s.accept_recipient(&john_at, Some(41)).await,
        Err(StoreError::QuotaExceededTemporary)
    ));
    assert!(matches!(
        deliver(&*s, &[b'x'; 41], 64, &[(john, "")]).await[0],
        Err(StoreError::QuotaExceededTemporary)
    ));
    assert!(deliver(&*s, &[b'x'; 40], 64, &[(john, "")]).await[0].is_ok());
    // Full on messages: nothing fits, whatever the size.
    assert!(matches!(
        s.accept_recipient(&john_at, None).await,
        Err(StoreError::QuotaExceededTemporary)
    ));
    assert_eq!(
        usage(&*s, "john@example.com").await,
        Usage {
            bytes: 100,
            messages: 2
        }
    );
}

pub(crate) async fn the_quota_warning_is_sent_once_per_crossing(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@example.com").await;
    s.set_user_quota(
        &addr("john@example.com"),
        QuotaChange {
            bytes: None,
            messages: Some(Some(20)),
        },
    )
    .await
    .expect("quota");
    for _ in 0..17 {
        assert!(deliver(&*s, b"hello\r\n", 64, &[(john, "")]).await[0].is_ok());
    }
    assert_eq!(
        s.list(john).await.expect("list").len(),
        17,
        "85%: no notice"
    );
    // The 18th message reaches 90%: the notice follows it into the mailbox.
    assert!(deliver(&*s, b"hello\r\n", 64, &[(john, "")]).await[0].is_ok());
    let list = s.list(john).await.expect("list");
    assert_eq!(list.len(), 19);
    let notice = read_all(&*s, &list[18]).await;
    let text = String::from_utf8_lossy(&notice);
    assert!(
        text.contains("Subject: Your mailbox is almost full"),
        "{text}"
    );
    assert!(text.contains("Messages: 18 of 20 (90%)"), "{text}");
    assert_eq!(list[18].size, notice.len() as u64);
    assert_eq!(usage(&*s, "john@example.com").await.messages, 19);
    // Once: the next delivery (to the limit) adds no second notice; then the mailbox is full.
    assert!(deliver(&*s, b"hello\r\n", 64, &[(john, "")]).await[0].is_ok());
    assert_eq!(s.list(john).await.expect("list").len(), 20);
    assert!(matches!(
        deliver(&*s, b"hello\r\n", 64, &[(john, "")]).await[0],
        Err(StoreError::QuotaExceeded)
    ));
    // Emptied below the threshold, it warns again at the next crossing.
    let lease = s.lock(john).await.expect("lock");
    let ids: Vec<MessageId> = s
        .list(john)
        .await
        .expect("list")
        .iter()
        .map(|m| m.id)
        .take(10)
        .collect();
    s.commit_update(&lease, &ids).await.expect("update");
    for _ in 0..7 {
        assert!(deliver(&*s, b"hello\r\n", 64, &[(john, "")]).await[0].is_ok());
    }
    assert_eq!(s.list(john).await.expect("list").len(), 17);
    assert!(deliver(&*s, b"hello\r\n", 64, &[(john, "")]).await[0].is_ok());
    assert_eq!(s.list(john).await.expect("list").len(), 19, "second notice");
    assert_eq!(usage(&*s, "john@example.com").await.messages, 19);
}

pub(crate) async fn parallel_deliveries_never_exceed_a_quota(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let d = domain("example.com");
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(user(&*s, &format!("u{i}@example.com")).await);
    }
    set_policies(&*s, "example.com", |p| p.quota_warn_percent = None).await;
    // Domain: 30 messages; u0 alone: 10 messages and 1000 octets.
    s.set_domain_quota(
        &d,
        QuotaChange {
            bytes: None,
            messages: Some(Some(30)),
        },
    )
    .await
    .expect("domain quota");
    s.set_user_quota(
        &addr("u0@example.com"),
        QuotaChange {
            bytes: Some(Some(1000)),
            messages: Some(Some(10)),
        },
    )
    .await
    .expect("user quota");
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = s.clone();
        let users = users.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = vec![0u64; 4];
            for i in 0..5 {
                let u = (t + i) % 4;
                if deliver(&*s, &[b'x'; 90], 64, &[(users[u], "")]).await[0].is_ok() {
                    ok[u] += 1;
                }
            }
            ok
        }));
    }
    let mut ok = vec![0u64; 4];
    for t in tasks {
        for (i, n) in t.await.expect("task").into_iter().enumerate() {
            ok[i] += n;
        }
    }
    let total: u64 = ok.iter().sum();
    assert_eq!(
        total, 30,
        "80 attempts, the domain takes exactly 30: {ok:?}"
    );
    assert!(ok[0] <= 10, "{ok:?}");
    let domain_usage = s.list_domains().await.expect("domains")[0].usage;
    assert_eq!(
        domain_usage,
        Usage {
            bytes: 90 * 30,
            messages: 30
        }
    );
    for (i, u) in users.iter().enumerate() {
        let listed = s.list(*u).await.expect("list").len() as u64;
        assert_eq!(listed, ok[i]);
        assert_eq!(
            usage(&*s, &format!("u{i}@example.com")).await,
            Usage {
                bytes: 90 * ok[i],
                messages: ok[i]
            }
        );
    }
}

pub(crate) async fn retention_deletes_old_mail_in_batches_but_not_in_open_maildrops(
    b: impl Backend,
) {
    let s = b.open(LockOptions::default()).await;
    let other = b.open(lock("other", 30_000)).await;
    let john = user(&*s, "john@keep30.example").await;
    let jane = user(&*s, "jane@keep30.example").await;
    let bob = user(&*s, "bob@forever.example").await;
    set_policies(&*s, "keep30.example", |p| p.retention_days = Some(30)).await;
    for _ in 0..5 {
        deliver(&*s, b"old\r\n", 64, &[(john, ""), (jane, ""), (bob, "")]).await;
    }
    let now = now_ms();
    // Controlled clock: nothing is 30 days old yet, nor a minute before the day.
    assert_eq!(s.expire(now, 2).await.expect("expire").deleted, 0);
    assert_eq!(
        s.expire(now + 30 * DAY_MS - 60_000, 2)
            .await
            .expect("expire")
            .deleted,
        0
    );
    // Jane is logged in: her maildrop is left alone while her session lives.
    let lease = s.lock(jane).await.expect("lock");
    let later = now + 31 * DAY_MS;
    let report = s.expire(later, 2).await.expect("expire");
    assert_eq!(report.deleted, 5);
    assert_eq!(report.batches, 3, "batches of 2: 2 + 2 + 1");
    assert!(s.list(john).await.expect("list").is_empty());
    assert_eq!(s.list(jane).await.expect("list").len(), 5);
    assert_eq!(s.list(bob).await.expect("list").len(), 5, "no retention");
    s.unlock(&lease).await.expect("unlock");
    // Two frontends at once: every old message deleted exactly once, counters exact.
    for _ in 0..20 {
        deliver(&*s, b"old\r\n", 64, &[(john, "")]).await;
    }
    let (a, b2) = tokio::join!(s.expire(later, 3), other.expire(later, 3));
    let deleted = a.expect("a").deleted + b2.expect("b").deleted;
    assert_eq!(deleted, 25);
    assert!(s.list(john).await.expect("list").is_empty());
    assert!(s.list(jane).await.expect("list").is_empty());
    assert_eq!(usage(&*s, "john@keep30.example").await, Usage::default());
    let domains = s.list_domains().await.expect("domains");
    let keep = domains
        .iter()
        .find(|d| d.name.as_str() == "keep30.example")
        .expect("domain");
    assert_eq!(keep.usage, Usage::default());
    assert_eq!(s.expire(later, 3).await.expect("again").deleted, 0);
}

pub(crate) async fn login_delay_refuses_early_logins(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@slow.example").await;
    let bob = user(&*s, "bob@fast.example").await;
    set_policies(&*s, "slow.example", |p| p.login_delay_secs = Some(300)).await;
    let lease = s.lock(john).await.expect("first login");
    // In use beats the delay: the client should hear the real reason.
    assert!(matches!(s.lock(john).await, Err(StoreError::InUse)));
    s.unlock(&lease).await.expect("unlock");
    match s.lock(john).await {
        Err(StoreError::LoginDelay(wait)) => assert!((295..=300).contains(&wait), "{wait}"),
        other => panic!("expected LoginDelay, got {other:?}"),
    }
    // A refused login does not take the lock.
    assert!(
        s.live_sessions(&Scope::All)
            .await
            .expect("sessions")
            .is_empty()
    );
    for _ in 0..2 {
        let l = s.lock(bob).await.expect("no delay");
        s.unlock(&l).await.expect("unlock");
    }
    set_policies(&*s, "slow.example", |p| p.login_delay_secs = None).await;
    let l = s.lock(john).await.expect("delay lifted");
    s.unlock(&l).await.expect("unlock");
}

pub(crate) async fn import_keeps_uids_reports_bad_ones_and_is_idempotent(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@example.com").await;
    // A delivered message tells the install's own form of ids.
    assert!(deliver(&*s, b"first\r\n", 64, &[(john, "")]).await[0].is_ok());
    let own = uids(&*s, john).await[0].clone();
    let (prefix, n) = own.rsplit_once('.').expect("prefix.n");
    let n: i64 = n.parse().expect("n");
    let ahead = format!("{prefix}.{}", n + 1000);
    let msg = |key: &str, uid: Option<&str>, body: &str| ImportMessage {
        key: key.into(),
        uid: uid.map(Into::into),
        data: body.as_bytes().to_vec(),
    };
    let batch = vec![
        msg(
            "maildir:1",
            Some("00000001aabbccdd"),
            "Subject: a\r\n\r\na\r\n",
        ),
        msg("maildir:2", None, "Subject: b\r\n\r\nb\r\n"),
        msg("maildir:3", Some("has space"), "Subject: c\r\n\r\nc\r\n"),
        msg(
            "maildir:4",
            Some("00000001aabbccdd"),
            "Subject: d\r\n\r\nd\r\n",
        ),
        msg("maildir:5", Some(&ahead), "Subject: e\r\n\r\ne\r\n"),
        msg(
            "maildir:6",
            Some(&"x".repeat(71)),
            "Subject: f\r\n\r\nf\r\n",
        ),
    ];
    let out = s.import(john, &batch).await.expect("import");
    assert_eq!(
        out[0],
        ImportOutcome::Added {
            uid: "00000001aabbccdd".into()
        }
    );
    assert!(matches!(&out[1], ImportOutcome::Added { uid } if uid.starts_with(prefix)));
    assert!(
        matches!(&out[2], ImportOutcome::Renumbered { old, reason, .. } if old == "has space" && reason.contains("0x20")),
        "{:?}",
        out[2]
    );
    assert!(
        matches!(&out[3], ImportOutcome::Renumbered { reason, .. } if reason.contains("already used")),
        "{:?}",
        out[3]
    );
    assert_eq!(out[4], ImportOutcome::Added { uid: ahead.clone() });
    assert!(matches!(&out[5], ImportOutcome::Renumbered { .. }));
    let listed = s.list(john).await.expect("list");
    assert_eq!(listed.len(), 7);
    assert_eq!(
        read_all(&*s, &listed[1]).await,
        b"Subject: a\r\n\r\na\r\n".to_vec()
    );
    assert_eq!(listed[1].size, 17);
    assert_eq!(usage(&*s, "john@example.com").await.messages, 7);
    // Again: nothing added.
    let again = s.import(john, &batch).await.expect("import again");
    assert!(
        again.iter().all(|o| *o == ImportOutcome::Present),
        "{again:?}"
    );
    assert_eq!(s.list(john).await.expect("list").len(), 7);
    // New mail continues past every id, imported ones of our own form included.
    assert!(deliver(&*s, b"next\r\n", 64, &[(john, "")]).await[0].is_ok());
    let all = uids(&*s, john).await;
    let newest = all.last().expect("newest");
    let m: i64 = newest
        .rsplit_once('.')
        .and_then(|(_, m)| m.parse().ok())
        .expect("own form");
    assert!(m > n + 1000, "{newest} after {ahead}");
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len());
}

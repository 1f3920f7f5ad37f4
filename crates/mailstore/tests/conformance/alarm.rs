//! Re-download alarms (issue 21, item 3) on both backends: a session retrieving again most of a
//! maildrop of at least 50 messages, and two client addresses deleting mail on arrival within the
//! hour; at most one alarm of a kind per user an hour; read in scope.

use super::*;

fn login(ip: &str) -> LoginRecord {
    LoginRecord {
        ip: Some(ip.parse().expect("ip")),
        mechanism: "USER".into(),
        tls: false,
    }
}

/// Delivers `n` small messages to `user`; returns the listing.
async fn fill(s: &dyn Store, user: UserId, n: usize) -> Vec<MessageMeta> {
    for i in 0..n {
        let body = format!("Subject: {i}\r\n\r\nbody {i}\r\n");
        let outcome = deliver(s, body.as_bytes(), 1024, &[(user, "")]).await;
        assert!(outcome.iter().all(|o| o.is_ok()), "delivered");
    }
    s.list(user).await.expect("list")
}

/// One POP3 session from `ip`: RETRs `retrieved`, then QUITs deleting `deleted` (or, with
/// `None`, ends without QUIT).
async fn session(
    s: &dyn Store,
    user: UserId,
    ip: &str,
    retrieved: &[MessageMeta],
    deleted: Option<&[MessageMeta]>,
) {
    let lease = s.lock_for_login(user, &login(ip)).await.expect("login");
    let ids: Vec<MessageId> = retrieved.iter().map(|m| m.id).collect();
    let marked: Option<Vec<MessageId>> = deleted.map(|d| d.iter().map(|m| m.id).collect());
    let login = login(ip);
    let end = SessionEnd {
        update: marked.as_deref(),
        retrieved: Transfer {
            messages: ids.len() as u64,
            octets: retrieved.iter().map(|m| m.size).sum(),
        },
        retrieved_ids: &ids,
        login: Some(&login),
    };
    s.end_session(&lease, &end).await.expect("end session");
}

async fn alarms(s: &dyn Store, address: &str) -> Vec<Alarm> {
    s.user_alarms(&addr(address), 100).await.expect("alarms")
}

async fn a_maildrop_retrieved_again_raises_one_alarm(b: impl Backend) {
    let clock = LeaseClock::default();
    let s = b.open(timed("n1", 30_000, &clock)).await;
    let john = user(&*s, "john@a.example").await;
    let all = fill(&*s, john, 50).await;

    // The first retrieval of everything is what clients do: no alarm.
    session(&*s, john, "192.0.2.1", &all, None).await;
    assert_eq!(alarms(&*s, "john@a.example").await, vec![]);
    // 39 of 50 again is below 80 %.
    session(&*s, john, "192.0.2.1", &all[..39], None).await;
    assert_eq!(alarms(&*s, "john@a.example").await, vec![]);
    // 40 of 50 is 80 %.
    session(&*s, john, "192.0.2.7", &all[..40], None).await;
    let raised = alarms(&*s, "john@a.example").await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    let a = &raised[0];
    assert_eq!(a.kind, AlarmKind::Redownload);
    assert_eq!(a.address, addr("john@a.example"));
    assert_eq!(a.count, 40);
    assert_eq!(a.ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(a.mechanism.as_deref(), Some("USER"));
    assert!(
        a.describe()
            .starts_with("re-downloaded 40 messages from a new client (192.0.2.7, USER)")
    );

    // The same client polling again within the hour is the same problem: no second alarm...
    session(&*s, john, "192.0.2.7", &all, Some(&[])).await;
    assert_eq!(alarms(&*s, "john@a.example").await.len(), 1);
    // ...an hour later it is raised again.
    clock.advance(Duration::from_secs(3601));
    session(&*s, john, "192.0.2.7", &all, None).await;
    let raised = alarms(&*s, "john@a.example").await;
    assert_eq!(raised.len(), 2);
    assert_eq!(raised[0].count, 50, "newest first");
}

async fn small_or_new_maildrops_raise_no_redownload_alarm(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    // 49 messages retrieved twice in full: below the 50 a maildrop must hold.
    let small = user(&*s, "small@a.example").await;
    let all = fill(&*s, small, 49).await;
    session(&*s, small, "192.0.2.1", &all, None).await;
    session(&*s, small, "192.0.2.2", &all, None).await;
    assert_eq!(alarms(&*s, "small@a.example").await, vec![]);

    // 60 messages: 30 retrieved, then all 60 (30 again, 30 new): half, not most.
    let jane = user(&*s, "jane@a.example").await;
    let all = fill(&*s, jane, 60).await;
    session(&*s, jane, "192.0.2.1", &all[..30], None).await;
    session(&*s, jane, "192.0.2.2", &all, None).await;
    assert_eq!(alarms(&*s, "jane@a.example").await, vec![]);
    // Now every one of them was retrieved: the next full download is again.
    session(&*s, jane, "192.0.2.3", &all, None).await;
    let raised = alarms(&*s, "jane@a.example").await;
    assert_eq!(raised.len(), 1);
    assert_eq!(
        (raised[0].kind.clone(), raised[0].count),
        (AlarmKind::Redownload, 60)
    );
}

async fn deleting_on_arrival_from_two_addresses_raises_an_alarm(b: impl Backend) {
    let clock = LeaseClock::default();
    let s = b.open(timed("n1", 3_600_000, &clock)).await;
    let john = user(&*s, "john@a.example").await;
    // One client deleting everything as it arrives, poll after poll: its own business.
    for _ in 0..2 {
        let new = fill(&*s, john, 1).await;
        session(&*s, john, "192.0.2.1", &new, Some(&new)).await;
    }
    assert_eq!(alarms(&*s, "john@a.example").await, vec![]);
    assert!(s.list(john).await.expect("list").is_empty());
    // A second address doing the same within the hour: two clients splitting the mail.
    let new = fill(&*s, john, 2).await;
    session(&*s, john, "192.0.2.2", &new, Some(&new)).await;
    let raised = alarms(&*s, "john@a.example").await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    let a = &raised[0];
    assert_eq!(a.kind, AlarmKind::QuickDelete);
    assert_eq!(a.count, 2);
    assert_eq!(a.ip.as_deref(), Some("192.0.2.2"));
    assert_eq!(a.previous_ip.as_deref(), Some("192.0.2.1"));
    assert!(a.describe().contains("(192.0.2.1)"), "{}", a.describe());

    // Mail a minute old is not deleted on arrival, whichever addresses delete it.
    let jane = user(&*s, "jane@a.example").await;
    let old = fill(&*s, jane, 1).await;
    clock.advance(Duration::from_secs(61));
    session(&*s, jane, "192.0.2.1", &old, Some(&old)).await;
    let old = fill(&*s, jane, 1).await;
    clock.advance(Duration::from_secs(61));
    session(&*s, jane, "192.0.2.2", &old, Some(&old)).await;
    assert_eq!(alarms(&*s, "jane@a.example").await, vec![]);
    assert!(
        s.list(jane).await.expect("list").is_empty(),
        "deleted all the same"
    );
}

async fn alarms_are_read_in_scope(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let before = now_ms();
    for address in ["john@a.example", "joe@b.example"] {
        let u = user(&*s, address).await;
        let all = fill(&*s, u, 50).await;
        session(&*s, u, "192.0.2.1", &all, None).await;
        session(&*s, u, "192.0.2.2", &all, None).await;
    }
    let names = |alarms: Vec<Alarm>| -> Vec<String> {
        alarms.iter().map(|a| a.address.to_string()).collect()
    };
    let all = s.recent_alarms(&Scope::All, before, 10).await.expect("all");
    assert_eq!(names(all), vec!["joe@b.example", "john@a.example"]);
    let a = Scope::Domains(vec![domain("a.example")]);
    let mine = s.recent_alarms(&a, before, 10).await.expect("a");
    assert_eq!(names(mine), vec!["john@a.example"]);
    let none = Scope::Domains(vec![domain("c.example")]);
    assert!(
        s.recent_alarms(&none, before, 10)
            .await
            .expect("c")
            .is_empty()
    );
    // Older than asked for: left out.
    let later = s
        .recent_alarms(&Scope::All, now_ms() + 60_000, 10)
        .await
        .expect("later");
    assert!(later.is_empty());
    assert_eq!(
        names(alarms(&*s, "joe@b.example").await),
        vec!["joe@b.example"]
    );
    assert!(alarms(&*s, "nobody@b.example").await.is_empty());
    // Pruning forgets them; removing a user takes theirs along.
    s.remove_user(&addr("joe@b.example")).await.expect("remove");
    assert_eq!(
        names(s.recent_alarms(&Scope::All, before, 10).await.expect("all")),
        vec!["john@a.example"]
    );
    assert_eq!(s.prune_alarms(now_ms() + 60_000).await.expect("prune"), 1);
    assert!(alarms(&*s, "john@a.example").await.is_empty());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

stories!(
    a_maildrop_retrieved_again_raises_one_alarm,
    small_or_new_maildrops_raise_no_redownload_alarm,
    deleting_on_arrival_from_two_addresses_raises_an_alarm,
    alarms_are_read_in_scope,
);

//! Stories of issue 21, item 1: the recycle bin on both backends. What POP3 deletes, retention
//! deletes, and restores and purges do to the maildrop, the bin, usage and shared bodies.

use super::*;

const JOHN: &str = "john@a.example";

fn pop3_login() -> LoginRecord {
    LoginRecord {
        ip: Some("192.0.2.9".parse().expect("ip")),
        mechanism: "PLAIN".into(),
        tls: true,
    }
}

/// Delivers `n` distinct messages to `user`; returns the maildrop.
async fn fill(s: &dyn Store, user: UserId, n: usize) -> Vec<MessageMeta> {
    for i in 0..n {
        let body = format!("Subject: m{i}\r\n\r\nbody {i}\r\n");
        deliver(s, body.as_bytes(), 1024, &[(user, "X-H: 1\r\n")]).await;
    }
    s.list(user).await.expect("list")
}

/// A session that logs in, marks `gone` with DELE, and QUITs.
async fn dele_quit(s: &dyn Store, user: UserId, gone: &[&MessageMeta]) {
    let login = pop3_login();
    let lease = s.lock_for_login(user, &login).await.expect("login");
    let ids: Vec<MessageId> = gone.iter().map(|m| m.id).collect();
    let end = SessionEnd {
        login: Some(&login),
        ..SessionEnd::new(Some(&ids), Transfer::default())
    };
    s.end_session(&lease, &end).await.expect("quit");
}

async fn bin(s: &dyn Store, address: &str) -> Vec<BinnedMessage> {
    s.bin_page(&addr(address), 0, 1000)
        .await
        .expect("bin")
        .items
}

fn uids(list: &[MessageMeta]) -> Vec<String> {
    list.iter().map(|m| m.uid.clone()).collect()
}

async fn dele_and_quit_bins_with_who_deleted(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let all = fill(&*s, john, 3).await;
    let before = usage(&*s, JOHN).await;
    dele_quit(&*s, john, &[&all[0], &all[2]]).await;

    let left = s.list(john).await.expect("list");
    assert_eq!(
        uids(&left),
        vec![all[1].uid.clone()],
        "STAT/LIST no longer show them"
    );
    let binned = bin(&*s, JOHN).await;
    assert_eq!(binned.len(), 2);
    let mut binned_uids: Vec<_> = binned.iter().map(|b| b.uid.clone()).collect();
    binned_uids.sort();
    let mut expected = vec![all[0].uid.clone(), all[2].uid.clone()];
    expected.sort();
    assert_eq!(binned_uids, expected);
    for b in &binned {
        assert_eq!(b.origin, BinOrigin::Pop3);
        assert!(b.session.is_some(), "the session's lock token");
        assert_eq!(b.ip.as_deref(), Some("192.0.2.9"));
        assert_eq!(b.mechanism.as_deref(), Some("PLAIN"));
        assert!(b.tls);
        assert!(!b.counts_quota);
    }
    // Not counted by default: usage drops as with a real delete.
    let after = usage(&*s, JOHN).await;
    assert_eq!(after.messages, before.messages - 2);
    assert_eq!(after.bytes, before.bytes - all[0].size - all[2].size);
    // The bodies are kept.
    assert!(s.read_part(&all[0], 1).await.expect("read").is_some());
}

async fn restore_keeps_the_uid_or_gives_a_new_one(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let all = fill(&*s, john, 2).await;
    let full = usage(&*s, JOHN).await;
    dele_quit(&*s, john, &[&all[0], &all[1]]).await;

    let r = s
        .bin_restore(
            &addr(JOHN),
            &BinSelection::Uids(vec![all[0].uid.clone()]),
            false,
        )
        .await
        .expect("restore");
    assert_eq!((r.restored, r.renumbered), (1, 0));
    let list = s.list(john).await.expect("list");
    assert_eq!(uids(&list), vec![all[0].uid.clone()], "original UIDL back");
    let body = read_all(&*s, &list[0]).await;
    assert_eq!(body, read_all_expected(0));

    let r = s
        .bin_restore(&addr(JOHN), &BinSelection::All, true)
        .await
        .expect("restore as new");
    assert_eq!((r.restored, r.renumbered), (1, 1));
    let list = s.list(john).await.expect("list");
    assert_eq!(list.len(), 2);
    assert_ne!(list[1].uid, all[1].uid, "a new UIDL");
    assert!(!all.iter().any(|m| m.uid == list[1].uid));
    assert!(bin(&*s, JOHN).await.is_empty());
    assert_eq!(usage(&*s, JOHN).await, full, "usage back");
}

fn read_all_expected(i: usize) -> Vec<u8> {
    format!("X-H: 1\r\nSubject: m{i}\r\n\r\nbody {i}\r\n").into_bytes()
}

async fn a_uid_live_again_is_renumbered(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let all = fill(&*s, john, 1).await;
    dele_quit(&*s, john, &[&all[0]]).await;
    // An import brings a message with that very UIDL back meanwhile.
    s.import(
        john,
        &[ImportMessage {
            key: "k1".into(),
            uid: Some(all[0].uid.clone()),
            data: b"Subject: other\r\n\r\nx\r\n".to_vec(),
        }],
    )
    .await
    .expect("import");
    let r = s
        .bin_restore(&addr(JOHN), &BinSelection::All, false)
        .await
        .expect("restore");
    assert_eq!((r.restored, r.renumbered), (1, 1));
    let list = s.list(john).await.expect("list");
    assert_eq!(list.len(), 2);
    assert_ne!(list[0].uid, list[1].uid);
}

async fn restore_by_time_range(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let all = fill(&*s, john, 3).await;
    dele_quit(&*s, john, &[&all[0]]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    dele_quit(&*s, john, &[&all[1]]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    dele_quit(&*s, john, &[&all[2]]).await;
    let binned = bin(&*s, JOHN).await;
    // Newest first.
    assert_eq!(
        binned.iter().map(|b| b.uid.clone()).collect::<Vec<_>>(),
        vec![all[2].uid.clone(), all[1].uid.clone(), all[0].uid.clone()]
    );
    let middle = binned[1].deleted_at;
    assert!(binned[2].deleted_at < middle && middle < binned[0].deleted_at);
    let r = s
        .bin_restore(
            &addr(JOHN),
            &BinSelection::DeletedBetween {
                from_ms: middle,
                to_ms: middle,
            },
            false,
        )
        .await
        .expect("restore");
    assert_eq!(r.restored, 1);
    assert_eq!(
        uids(&s.list(john).await.expect("list")),
        vec![all[1].uid.clone()]
    );
    assert_eq!(bin(&*s, JOHN).await.len(), 2);
}

async fn purge_frees_bodies_exactly(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let jane = user(&*s, "jane@a.example").await;
    // One body for both.
    deliver(
        &*s,
        b"Subject: both\r\n\r\nshared\r\n",
        1024,
        &[(john, "X-To: john\r\n"), (jane, "X-To: jane\r\n")],
    )
    .await;
    let j = s.list(john).await.expect("list").remove(0);
    let k = s.list(jane).await.expect("list").remove(0);
    assert_eq!(j.blob, k.blob);
    dele_quit(&*s, john, &[&j]).await;
    dele_quit(&*s, jane, &[&k]).await;
    assert_eq!(
        s.bin_purge(&addr(JOHN), &BinSelection::All)
            .await
            .expect("purge"),
        1
    );
    assert!(bin(&*s, JOHN).await.is_empty());
    assert!(
        s.read_part(&k, 1).await.expect("read").is_some(),
        "jane's binned copy keeps the body"
    );
    // Jane gets hers back and reads it whole.
    s.bin_restore(&addr("jane@a.example"), &BinSelection::All, false)
        .await
        .expect("restore");
    let back = s.list(jane).await.expect("list").remove(0);
    assert_eq!(
        read_all(&*s, &back).await,
        b"X-To: jane\r\nSubject: both\r\n\r\nshared\r\n"
    );
    dele_quit(&*s, jane, &[&back]).await;
    let gone = bin(&*s, "jane@a.example").await[0].id;
    assert_eq!(
        s.bin_purge(&addr("jane@a.example"), &BinSelection::Ids(vec![gone]))
            .await
            .expect("purge"),
        1
    );
    assert!(
        s.read_part(&k, 1).await.expect("read").is_none(),
        "the last reference gone: the body is freed"
    );
}

async fn bin_days_zero_deletes_for_real(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let d = domain("a.example");
    assert_eq!(
        s.bin_settings(&d).await.expect("settings"),
        BinSettings::default()
    );
    s.set_bin_settings(
        &d,
        &BinSettings {
            days: 0,
            counts_quota: false,
        },
    )
    .await
    .expect("off");
    assert_eq!(s.bin_settings(&d).await.expect("settings").days, 0);
    let all = fill(&*s, john, 1).await;
    dele_quit(&*s, john, &[&all[0]]).await;
    assert!(bin(&*s, JOHN).await.is_empty());
    assert!(s.read_part(&all[0], 1).await.expect("read").is_none());
    assert_eq!(usage(&*s, JOHN).await, Usage::default());
    assert!(matches!(
        s.set_bin_settings(
            &d,
            &BinSettings {
                days: MAX_BIN_DAYS + 1,
                counts_quota: false
            }
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
}

async fn quota_counts_the_bin_only_when_the_domain_says_so(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let d = domain("a.example");
    s.set_bin_settings(
        &d,
        &BinSettings {
            days: 7,
            counts_quota: true,
        },
    )
    .await
    .expect("counts");
    let all = fill(&*s, john, 2).await;
    let full = usage(&*s, JOHN).await;
    dele_quit(&*s, john, &[&all[0]]).await;
    assert_eq!(usage(&*s, JOHN).await, full, "still counted while binned");
    assert!(bin(&*s, JOHN).await[0].counts_quota);
    // The setting changes; what was binned keeps its own accounting.
    s.set_bin_settings(
        &d,
        &BinSettings {
            days: 7,
            counts_quota: false,
        },
    )
    .await
    .expect("not counted");
    dele_quit(&*s, john, &[&all[1]]).await;
    let after = usage(&*s, JOHN).await;
    assert_eq!(after.messages, 1);
    assert_eq!(after.bytes, all[0].size);
    s.bin_restore(&addr(JOHN), &BinSelection::All, false)
        .await
        .expect("restore");
    assert_eq!(usage(&*s, JOHN).await, full);
    let live = s.list(john).await.expect("list");
    dele_quit(&*s, john, &live.iter().collect::<Vec<_>>()).await;
    assert_eq!(usage(&*s, JOHN).await, Usage::default());
    s.bin_purge(&addr(JOHN), &BinSelection::All)
        .await
        .expect("purge");
    assert_eq!(usage(&*s, JOHN).await, Usage::default());
    // Counted entries leave the counters when purged.
    s.set_bin_settings(
        &d,
        &BinSettings {
            days: 7,
            counts_quota: true,
        },
    )
    .await
    .expect("counts");
    let more = fill(&*s, john, 1).await;
    dele_quit(&*s, john, &[&more[0]]).await;
    assert_eq!(usage(&*s, JOHN).await.messages, 1);
    s.bin_purge(&addr(JOHN), &BinSelection::All)
        .await
        .expect("purge");
    assert_eq!(usage(&*s, JOHN).await, Usage::default());
    let dom = s.domain_detail(&d).await.expect("detail").expect("domain");
    assert_eq!(dom.usage, Usage::default(), "the domain's counters too");
}

async fn retention_bins_and_the_bin_expires(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let d = domain("a.example");
    let mut p = s.domain_policies(&d).await.expect("policies");
    p.retention_days = Some(1);
    s.set_domain_policies(&d, &p).await.expect("set");
    let all = fill(&*s, john, 2).await;
    let report = s
        .expire(now_ms() + 2 * 86_400_000, 10)
        .await
        .expect("expire");
    assert_eq!(report.deleted, 2);
    assert!(s.list(john).await.expect("list").is_empty());
    let binned = bin(&*s, JOHN).await;
    assert_eq!(binned.len(), 2);
    assert!(binned.iter().all(|b| b.origin == BinOrigin::Retention));
    assert!(binned.iter().all(|b| b.session.is_none() && b.ip.is_none()));
    // Within bin_days nothing is purged; after, everything (and the bodies).
    assert_eq!(
        s.purge_expired_bins(now_ms() + 6 * 86_400_000)
            .await
            .expect("purge"),
        0
    );
    assert_eq!(
        s.purge_expired_bins(now_ms() + 8 * 86_400_000)
            .await
            .expect("purge"),
        2
    );
    assert!(bin(&*s, JOHN).await.is_empty());
    assert!(s.read_part(&all[0], 1).await.expect("read").is_none());
}

async fn restore_while_a_session_holds_the_maildrop(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let all = fill(&*s, john, 2).await;
    dele_quit(&*s, john, &[&all[0]]).await;
    let login = pop3_login();
    let lease = s.lock_for_login(john, &login).await.expect("login");
    let seen = s.list(john).await.expect("list");
    let r = s
        .bin_restore(&addr(JOHN), &BinSelection::All, false)
        .await
        .expect("restore despite the lock");
    assert_eq!(r.restored, 1);
    // The open session deletes what it saw; the restored message survives its UPDATE.
    let ids: Vec<MessageId> = seen.iter().map(|m| m.id).collect();
    s.end_session(
        &lease,
        &SessionEnd {
            login: Some(&login),
            ..SessionEnd::new(Some(&ids), Transfer::default())
        },
    )
    .await
    .expect("quit");
    assert_eq!(
        uids(&s.list(john).await.expect("list")),
        vec![all[0].uid.clone()]
    );
    assert_eq!(bin(&*s, JOHN).await.len(), 1);
}

async fn removing_a_user_empties_their_bin(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let all = fill(&*s, john, 1).await;
    dele_quit(&*s, john, &[&all[0]]).await;
    s.remove_user(&addr(JOHN)).await.expect("remove");
    assert!(s.read_part(&all[0], 1).await.expect("read").is_none());
    let d = domain("a.example");
    let dom = s.domain_detail(&d).await.expect("detail").expect("domain");
    assert_eq!(dom.usage, Usage::default());
    // And a domain removed with force takes its users' bins.
    let jane = user(&*s, "jane@a.example").await;
    let all = fill(&*s, jane, 1).await;
    dele_quit(&*s, jane, &[&all[0]]).await;
    s.remove_domain(&d, true).await.expect("remove domain");
    assert!(s.read_part(&all[0], 1).await.expect("read").is_none());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

stories!(
    dele_and_quit_bins_with_who_deleted,
    restore_keeps_the_uid_or_gives_a_new_one,
    a_uid_live_again_is_renumbered,
    restore_by_time_range,
    purge_frees_bodies_exactly,
    bin_days_zero_deletes_for_real,
    quota_counts_the_bin_only_when_the_domain_says_so,
    retention_bins_and_the_bin_expires,
    restore_while_a_session_holds_the_maildrop,
    removing_a_user_empties_their_bin,
);

//! Bulletins (issue 21 item 4): one copy into every mailbox of the scope that existed at the due
//! time, exactly once however often and by however many stores delivery runs, not before the
//! due time, and even into a full mailbox; on both backends.

use super::*;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn notice(scope: BulletinScope, subject: &str, due_at: i64) -> NewBulletin {
    NewBulletin::new(
        scope,
        subject,
        "The server restarts at 22:00.\n",
        due_at,
        "cli",
    )
    .expect("bulletin")
}

/// The messages in a mailbox, as text.
async fn mailbox(s: &dyn Store, user: UserId) -> Vec<String> {
    let mut out = Vec::new();
    for m in s.list(user).await.expect("list") {
        out.push(String::from_utf8(read_all(s, &m).await).expect("utf-8"));
    }
    out
}

async fn bulletins_reach_every_mailbox_of_their_scope_once(b: impl Backend) {
    let s = b.open(lock("n1", 30_000)).await;
    let a1 = user(&*s, "ann@a.example").await;
    let a2 = user(&*s, "bob@a.example").await;
    let b1 = user(&*s, "cid@b.example").await;

    let id = s
        .post_bulletin(
            &notice(
                BulletinScope::Domain(domain("a.example")),
                "Wartung läuft",
                0,
            ),
            now(),
        )
        .await
        .expect("post");
    assert_eq!(s.deliver_bulletins(now()).await.expect("deliver"), [id]);
    for (user, to) in [(a1, "ann@a.example"), (a2, "bob@a.example")] {
        let got = mailbox(&*s, user).await;
        assert_eq!(got.len(), 1, "{to}");
        assert!(got[0].starts_with("From: Postmaster <postmaster@a.example>\r\n"));
        assert!(got[0].contains(&format!("To: <{to}>\r\n")));
        assert!(got[0].contains("Subject: =?UTF-8?B?V2FydHVuZyBsw6R1ZnQ=?=\r\n"));
        assert!(got[0].ends_with("\r\n\r\nThe server restarts at 22:00.\r\n"));
    }
    assert!(mailbox(&*s, b1).await.is_empty(), "other domain");
    let posted = s.bulletin(id).await.expect("get").expect("exists");
    assert_eq!(posted.state, BulletinState::Delivered);
    assert_eq!(posted.recipients, 2);
    assert!(posted.delivered_at.is_some());
    // Counted in usage like any message.
    assert_eq!(usage(&*s, "ann@a.example").await.messages, 1);

    // A user created after the due time never gets it; running delivery again adds nothing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let a3 = user(&*s, "dan@a.example").await;
    assert!(s.deliver_bulletins(now()).await.expect("again").is_empty());
    assert!(mailbox(&*s, a3).await.is_empty());
    assert_eq!(mailbox(&*s, a1).await.len(), 1);

    // All domains: every mailbox, each with its own domain's postmaster and its own UIDL.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let all = s
        .post_bulletin(&notice(BulletinScope::All, "Security", 0), now())
        .await
        .expect("post all");
    s.deliver_bulletins(now()).await.expect("deliver all");
    s.deliver_bulletins(now()).await.expect("deliver all again");
    for u in [a1, a2, a3, b1] {
        // a3 came after the first bulletin, b1 is outside its domain.
        let n = if u == a3 || u == b1 { 1 } else { 2 };
        assert_eq!(mailbox(&*s, u).await.len(), n);
    }
    assert!(mailbox(&*s, b1).await[0].starts_with("From: Postmaster <postmaster@b.example>"));
    let uids: std::collections::HashSet<String> = s
        .list(a1)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(uids.len(), 2);
    assert_eq!(s.bulletin(all).await.unwrap().unwrap().recipients, 4);

    // Listing: a super admin sees both, a domain admin only their domain's.
    let listed: Vec<BulletinId> = s
        .list_bulletins(&Scope::All, 10)
        .await
        .unwrap()
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(listed, [all, id]);
    let theirs = s
        .list_bulletins(&Scope::Domains(vec![domain("a.example")]), 10)
        .await
        .unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].id, id);
    assert!(
        s.list_bulletins(&Scope::Domains(vec![domain("b.example")]), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        s.post_bulletin(
            &notice(BulletinScope::Domain(domain("nowhere.example")), "x", 0),
            now()
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn a_scheduled_bulletin_waits_for_its_time_and_can_be_cancelled(b: impl Backend) {
    let s = b.open(lock("n1", 30_000)).await;
    let a1 = user(&*s, "ann@a.example").await;
    let t = now();
    let id = s
        .post_bulletin(
            &notice(
                BulletinScope::Domain(domain("a.example")),
                "Later",
                t + 60_000,
            ),
            t,
        )
        .await
        .expect("post");
    assert!(s.deliver_bulletins(t + 59_000).await.unwrap().is_empty());
    assert!(mailbox(&*s, a1).await.is_empty(), "not before it is due");
    assert_eq!(
        s.bulletin(id).await.unwrap().unwrap().state,
        BulletinState::Scheduled
    );
    // A user created before the due time gets it, even though posted after the bulletin.
    let a2 = user(&*s, "bob@a.example").await;
    assert_eq!(s.deliver_bulletins(t + 60_000).await.unwrap(), [id]);
    assert_eq!(mailbox(&*s, a1).await.len(), 1);
    assert_eq!(mailbox(&*s, a2).await.len(), 1);
    assert!(matches!(
        s.cancel_bulletin(id).await,
        Err(StoreError::Conflict(_))
    ));

    let cancelled = s
        .post_bulletin(&notice(BulletinScope::All, "Never", t + 60_000), t)
        .await
        .unwrap();
    s.cancel_bulletin(cancelled).await.expect("cancel");
    assert!(s.deliver_bulletins(t + 120_000).await.unwrap().is_empty());
    assert_eq!(mailbox(&*s, a1).await.len(), 1);
    assert_eq!(
        s.bulletin(cancelled).await.unwrap().unwrap().state,
        BulletinState::Cancelled
    );
    assert!(matches!(
        s.cancel_bulletin(BulletinId(9999)).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn a_full_mailbox_still_gets_a_bulletin(b: impl Backend) {
    let s = b.open(lock("n1", 30_000)).await;
    let a1 = user(&*s, "ann@a.example").await;
    s.set_user_quota(
        &addr("ann@a.example"),
        QuotaChange {
            bytes: None,
            messages: Some(Some(1)),
        },
    )
    .await
    .expect("quota");
    assert_eq!(
        deliver(&*s, b"Subject: hi\r\n\r\nx\r\n", 1024, &[(a1, "")])
            .await
            .len(),
        1
    );
    assert_eq!(usage(&*s, "ann@a.example").await.messages, 1);
    s.post_bulletin(&notice(BulletinScope::All, "Important", 0), now())
        .await
        .unwrap();
    s.deliver_bulletins(now()).await.unwrap();
    assert_eq!(mailbox(&*s, a1).await.len(), 2);
    assert_eq!(usage(&*s, "ann@a.example").await.messages, 2);
}

async fn concurrent_deliverers_give_each_mailbox_one_copy(b: impl Backend) {
    let first = b.open(lock("n1", 30_000)).await;
    let second = b.open(lock("n2", 30_000)).await;
    // More mailboxes than one batch holds.
    let mut users = Vec::new();
    for i in 0..230 {
        users.push(user(&*first, &format!("u{i}@a.example")).await);
    }
    let id = first
        .post_bulletin(&notice(BulletinScope::All, "Once", 0), now())
        .await
        .unwrap();
    let at = now();
    let (x, y) = tokio::join!(first.deliver_bulletins(at), second.deliver_bulletins(at));
    let finished = x.expect("first").len() + y.expect("second").len();
    assert_eq!(finished, 1, "exactly one run finishes the bulletin");
    for u in &users {
        assert_eq!(first.list(*u).await.unwrap().len(), 1);
    }
    assert_eq!(first.bulletin(id).await.unwrap().unwrap().recipients, 230);
}

async fn an_interrupted_delivery_resumes_without_duplicates(b: impl Backend) {
    let s = b.open(lock("n1", 30_000)).await;
    let mut users = Vec::new();
    for i in 0..250 {
        users.push(user(&*s, &format!("u{i}@a.example")).await);
    }
    let id = s
        .post_bulletin(&notice(BulletinScope::All, "Resumed", 0), now())
        .await
        .unwrap();
    // Dropped part-way (as a crash would leave it): committed batches stay, the open one is
    // rolled back.
    let at = now();
    let _ = tokio::time::timeout(Duration::from_millis(30), s.deliver_bulletins(at)).await;
    s.deliver_bulletins(at).await.expect("resume");
    for u in &users {
        assert_eq!(s.list(*u).await.unwrap().len(), 1);
    }
    let done = s.bulletin(id).await.unwrap().unwrap();
    assert_eq!(done.recipients, 250);
    assert_eq!(done.state, BulletinState::Delivered);
}

stories!(
    an_interrupted_delivery_resumes_without_duplicates,
    bulletins_reach_every_mailbox_of_their_scope_once,
    a_scheduled_bulletin_waits_for_its_time_and_can_be_cancelled,
    a_full_mailbox_still_gets_a_bulletin,
    concurrent_deliverers_give_each_mailbox_one_copy,
);

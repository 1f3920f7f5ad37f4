//! Stories of issue 21, item 2: deduplication of deliveries by `DedupKey` — a repeat within the
//! window is reported as `Duplicate` and stores nothing, per recipient; other keys, no key, an
//! expired window and a refused first attempt store; concurrent duplicates store one copy.

use super::*;

fn key(n: u8, window_ms: u64) -> DedupKey {
    DedupKey {
        hash: [n; 32],
        window: Duration::from_millis(window_ms),
    }
}

const WINDOW: u64 = 600_000;

async fn keyed(
    store: &dyn Store,
    body: &[u8],
    chunk: usize,
    to: &[UserId],
    dedup: Option<DedupKey>,
) -> Vec<Result<()>> {
    let to: Vec<(UserId, &str)> = to.iter().map(|u| (*u, "X-To: someone\r\n")).collect();
    let mut p = parcel(store, body, chunk, &to).await;
    p.dedup = dedup;
    store.deliver(p).await.expect("deliver")
}

fn shape(outcomes: &[Result<()>]) -> Vec<&'static str> {
    outcomes
        .iter()
        .map(|o| match o {
            Ok(()) => "stored",
            Err(StoreError::Duplicate) => "duplicate",
            Err(StoreError::QuotaExceeded) => "full",
            Err(_) => "other",
        })
        .collect()
}

async fn count(store: &dyn Store, user: UserId) -> usize {
    store.list(user).await.expect("list").len()
}

async fn a_repeat_within_the_window_stores_nothing(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@a.example").await;
    let jane = user(&*s, "jane@a.example").await;
    let bob = user(&*s, "bob@a.example").await;
    let body = b"Message-ID: <1@x>\r\n\r\nhello\r\n";

    let first = keyed(&*s, body, 1 << 20, &[john, jane], Some(key(1, WINDOW))).await;
    assert_eq!(shape(&first), ["stored", "stored"]);
    // The MTA's retry; a large body (streamed in chunks) the same way.
    let again = keyed(&*s, body, 1 << 20, &[john], Some(key(1, WINDOW))).await;
    assert_eq!(shape(&again), ["duplicate"]);
    let again = keyed(&*s, body, 4, &[jane], Some(key(1, WINDOW))).await;
    assert_eq!(shape(&again), ["duplicate"]);
    // Per recipient: bob never got it.
    let mixed = keyed(&*s, body, 1 << 20, &[john, bob, jane], Some(key(1, WINDOW))).await;
    assert_eq!(shape(&mixed), ["duplicate", "stored", "duplicate"]);
    assert_eq!(
        (
            count(&*s, john).await,
            count(&*s, jane).await,
            count(&*s, bob).await
        ),
        (1, 1, 1)
    );
    assert_eq!(usage(&*s, "john@a.example").await.messages, 1);
    let stored = &s.list(john).await.expect("list")[0];
    assert_eq!(
        read_all(&*s, stored).await,
        [&b"X-To: someone\r\n"[..], body].concat()
    );

    // Another key (other sender or other body: LMTP hashes them in) and no key both store.
    let other = keyed(&*s, body, 1 << 20, &[john], Some(key(2, WINDOW))).await;
    assert_eq!(shape(&other), ["stored"]);
    for _ in 0..2 {
        let plain = keyed(&*s, body, 1 << 20, &[john], None).await;
        assert_eq!(shape(&plain), ["stored"]);
    }
    assert_eq!(count(&*s, john).await, 4);
    assert_eq!(usage(&*s, "john@a.example").await.messages, 4);
}

async fn a_refused_delivery_is_not_remembered(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@a.example").await;
    let full = QuotaChange {
        messages: Some(Some(0)),
        ..QuotaChange::default()
    };
    s.set_user_quota(&addr("john@a.example"), full)
        .await
        .expect("quota");
    let body = b"Message-ID: <2@x>\r\n\r\nhello\r\n";
    let refused = keyed(&*s, body, 1 << 20, &[john], Some(key(3, WINDOW))).await;
    assert_eq!(shape(&refused), ["full"]);
    let room = QuotaChange {
        messages: Some(None),
        ..QuotaChange::default()
    };
    s.set_user_quota(&addr("john@a.example"), room)
        .await
        .expect("quota");
    // The MTA retries once the mailbox has room: stored, not taken for a duplicate.
    let retry = keyed(&*s, body, 1 << 20, &[john], Some(key(3, WINDOW))).await;
    assert_eq!(shape(&retry), ["stored"]);
    // A duplicate is answered as delivered even when the mailbox is full again.
    s.set_user_quota(
        &addr("john@a.example"),
        QuotaChange {
            messages: Some(Some(1)),
            ..QuotaChange::default()
        },
    )
    .await
    .expect("quota");
    let again = keyed(&*s, body, 1 << 20, &[john], Some(key(3, WINDOW))).await;
    assert_eq!(shape(&again), ["duplicate"]);
    assert_eq!(count(&*s, john).await, 1);
}

async fn after_the_window_it_is_stored_again_and_pruned(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@a.example").await;
    let body = b"Message-ID: <3@x>\r\n\r\nhello\r\n";
    let short = keyed(&*s, body, 1 << 20, &[john], Some(key(4, 1))).await;
    assert_eq!(shape(&short), ["stored"]);
    let long = keyed(&*s, body, 1 << 20, &[john], Some(key(5, WINDOW))).await;
    assert_eq!(shape(&long), ["stored"]);
    // Past a 1 ms window by the store's clock (no other clock decides it).
    tokio::time::sleep(Duration::from_millis(30)).await;
    let later = keyed(&*s, body, 1 << 20, &[john], Some(key(4, 1))).await;
    assert_eq!(shape(&later), ["stored"], "window passed");
    tokio::time::sleep(Duration::from_millis(30)).await;
    // Only the expired record goes; the one still in its window keeps working.
    assert_eq!(s.prune_delivery_keys().await.expect("prune"), 1);
    assert_eq!(s.prune_delivery_keys().await.expect("prune"), 0);
    let dup = keyed(&*s, body, 1 << 20, &[john], Some(key(5, WINDOW))).await;
    assert_eq!(shape(&dup), ["duplicate"]);
    assert_eq!(count(&*s, john).await, 3);
}

async fn concurrent_duplicates_store_one_copy(b: impl Backend) {
    // Two frontends on one database, each with its own delivery writer (and on one of them,
    // deliveries that group commit may put into one transaction).
    let one = b.open(lock("one", 30_000)).await;
    let two = b.open(lock("two", 30_000)).await;
    let john = user(&*one, "john@a.example").await;
    let jane = user(&*one, "jane@a.example").await;
    let body = b"Message-ID: <4@x>\r\n\r\nhello\r\n".repeat(10);
    for round in 0..3u8 {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = if i % 2 == 0 { one.clone() } else { two.clone() };
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                // Some streamed, some whole: both paths race.
                let chunk = if i % 3 == 0 { 64 } else { 1 << 20 };
                keyed(
                    &*s,
                    &body,
                    chunk,
                    &[john, jane],
                    Some(key(10 + round, WINDOW)),
                )
                .await
            }));
        }
        let mut stored = [0, 0];
        for t in tasks {
            let outcomes = t.await.expect("task");
            for (n, o) in outcomes.iter().enumerate() {
                match o {
                    Ok(()) => stored[n] += 1,
                    Err(StoreError::Duplicate) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }
        assert_eq!(stored, [1, 1], "round {round}");
    }
    assert_eq!((count(&*one, john).await, count(&*two, jane).await), (3, 3));
    assert_eq!(usage(&*one, "john@a.example").await.messages, 3);
}

stories!(
    a_repeat_within_the_window_stores_nothing,
    a_refused_delivery_is_not_remembered,
    after_the_window_it_is_stored_again_and_pruned,
    concurrent_duplicates_store_one_copy,
);

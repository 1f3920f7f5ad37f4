//! Stories of issue 23, item 3: bulk loading (`BulkLoad`). Bulk-added users log in like added
//! ones; bulk-loaded mail lists, reads and deletes like delivered mail (usage, UIDs, a body
//! longer than one chunk, bodies dropped with their last message), quotas refuse as delivery
//! does, and a batch that names an existing user or passes the user limit adds nothing.

use super::*;

fn locals(names: &[&str]) -> Vec<LocalPart> {
    names
        .iter()
        .map(|n| LocalPart::parse(n).expect("local part"))
        .collect()
}

fn bulk(user: UserId, prefix: &str, body: &[u8]) -> BulkMessage {
    BulkMessage {
        body: body.to_vec(),
        recipients: vec![Recipient {
            user,
            prefix: prefix.as_bytes().to_vec(),
        }],
    }
}

async fn bulk_loaded_mail_lists_reads_and_deletes_like_delivered_mail(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let d = domain("bulk.example");
    s.add_domain(&d).await.expect("domain");
    let ids = s
        .add_users_bulk(
            &d,
            &locals(&["u1", "u2", "u3"]),
            "$argon2id$shared",
            Some("scram"),
        )
        .await
        .expect("bulk users");
    assert_eq!(ids.len(), 3);
    for (n, id) in ids.iter().enumerate() {
        let found = s
            .find_user(&addr(&format!("u{}@bulk.example", n + 1)))
            .await
            .expect("find")
            .expect("user exists");
        assert_eq!(found.id, *id);
        assert_eq!(found.password_hash, "$argon2id$shared");
    }
    // A delivered message first, so the UIDs of bulk-loaded ones must come after its.
    let delivered = deliver(
        &*s,
        b"Subject: first\r\n\r\nhi\r\n",
        1 << 20,
        &[(ids[0], "X: 0\r\n")],
    )
    .await;
    assert!(delivered.iter().all(Result::is_ok));
    let small = b"Subject: small\r\n\r\nhello\r\n".to_vec();
    let large: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("line {i}\r\n").into_bytes())
        .collect();
    assert!(large.len() > CHUNK_SIZE * 2);
    let report = s
        .deliver_bulk(vec![
            bulk(ids[0], "X: a\r\n", &small),
            bulk(ids[0], "X: b\r\n", &large),
            bulk(ids[1], "X: c\r\n", &small),
        ])
        .await
        .expect("bulk deliver");
    assert_eq!(
        report,
        BulkReport {
            stored: 3,
            refused: 0
        }
    );

    let list = s.list(ids[0]).await.expect("list");
    assert_eq!(list.len(), 3);
    assert_eq!(
        read_all(&*s, &list[1]).await,
        [b"X: a\r\n".as_slice(), &small].concat()
    );
    assert_eq!(
        read_all(&*s, &list[2]).await,
        [b"X: b\r\n".as_slice(), &large].concat()
    );
    assert_eq!(list[2].size, (6 + large.len()) as u64);
    // UIDs of the install's form, after the delivered one's.
    let number = |uid: &str| -> u64 {
        let (prefix, n) = uid.rsplit_once('.').expect("prefix.n");
        assert!(!prefix.is_empty());
        n.parse().expect("number")
    };
    assert_eq!(
        list[0].uid.rsplit_once('.').map(|p| p.0),
        list[1].uid.rsplit_once('.').map(|p| p.0)
    );
    assert!(number(&list[0].uid) < number(&list[1].uid));
    assert!(number(&list[1].uid) < number(&list[2].uid));
    let bytes = (list.iter().map(|m| m.size).sum::<u64>(), 3);
    assert_eq!(
        usage(&*s, "u1@bulk.example").await,
        Usage {
            bytes: bytes.0,
            messages: bytes.1
        }
    );
    let domains = s.list_domains().await.expect("domains");
    let info = domains.iter().find(|i| i.name == d).expect("listed");
    assert_eq!(info.usage.messages, 4);

    // A session deletes them as it deletes delivered mail: usage goes back to zero.
    let lease = s.lock(ids[0]).await.expect("lock");
    let all: Vec<MessageId> = list.iter().map(|m| m.id).collect();
    s.commit_update(&lease, &all).await.expect("update");
    assert!(s.list(ids[0]).await.expect("list").is_empty());
    assert_eq!(usage(&*s, "u1@bulk.example").await, Usage::default());
    // Later deliveries go on numbering after the bulk-loaded ones.
    deliver(
        &*s,
        b"Subject: later\r\n\r\nx\r\n",
        1 << 20,
        &[(ids[0], "X: d\r\n")],
    )
    .await;
    let later = s.list(ids[0]).await.expect("list");
    assert!(number(&later[0].uid) > number(&list[2].uid));
}

async fn bulk_users_are_all_or_nothing(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let d = domain("bulk.example");
    s.add_domain(&d).await.expect("domain");
    s.add_users_bulk(&d, &locals(&["a", "b"]), "$argon2id$x", None)
        .await
        .expect("first batch");
    // "b" exists: nothing of the batch is added.
    let again = s
        .add_users_bulk(&d, &locals(&["c", "b"]), "$argon2id$x", None)
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(s.list_users(&d).await.expect("users").len(), 2);
    // The domain's user limit counts the whole batch.
    let detail = detail(&*s, "bulk.example").await;
    let mut limited = settings(&detail);
    limited.max_users = Some(3);
    s.update_domain(&d, &limited).await.expect("limit");
    let over = s
        .add_users_bulk(&d, &locals(&["c", "e"]), "$argon2id$x", None)
        .await;
    assert!(matches!(over, Err(StoreError::Conflict(_))), "{over:?}");
    s.add_users_bulk(&d, &locals(&["c"]), "$argon2id$x", None)
        .await
        .expect("within the limit");
    assert_eq!(s.list_users(&d).await.expect("users").len(), 3);
    let missing = s
        .add_users_bulk(
            &domain("none.example"),
            &locals(&["z"]),
            "$argon2id$x",
            None,
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

async fn bulk_delivery_keeps_quotas(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let d = domain("bulk.example");
    s.add_domain(&d).await.expect("domain");
    let ids = s
        .add_users_bulk(&d, &locals(&["q"]), "$argon2id$x", None)
        .await
        .expect("users");
    s.set_user_quota(
        &addr("q@bulk.example"),
        QuotaChange {
            bytes: None,
            messages: Some(Some(2)),
        },
    )
    .await
    .expect("quota");
    let messages = (0..4)
        .map(|n| {
            bulk(
                ids[0],
                "X: q\r\n",
                format!("Subject: {n}\r\n\r\nx\r\n").as_bytes(),
            )
        })
        .collect();
    let report = s.deliver_bulk(messages).await.expect("bulk");
    // Two fit; the quota warning (at 90 %) is not stored either, as it would not fit.
    assert_eq!(
        report,
        BulkReport {
            stored: 2,
            refused: 2
        }
    );
    assert_eq!(s.list(ids[0]).await.expect("list").len(), 2);
    assert_eq!(usage(&*s, "q@bulk.example").await.messages, 2);
}

stories!(
    bulk_loaded_mail_lists_reads_and_deletes_like_delivered_mail,
    bulk_users_are_all_or_nothing,
    bulk_delivery_keeps_quotas,
);

//! Stories of the issue "Admin UI", item 4: what a customer did (logins with their reasons,
//! retrieved and deleted per day, last delivery), the live sessions' client and TLS, and
//! pruning, on both backends.

use super::*;

fn login(ip: &str, mechanism: &str, tls: bool) -> LoginRecord {
    LoginRecord {
        ip: Some(ip.parse().expect("ip")),
        mechanism: mechanism.into(),
        tls,
    }
}

fn failure(address: &str, reason: FailureReason) -> FailedLogin {
    FailedLogin {
        login: login("198.51.100.7", "USER", false),
        address: Some(addr(address)),
        domain: None,
        reason,
    }
}

async fn activity(s: &dyn Store, address: &str) -> UserActivity {
    s.user_activity(&addr(address))
        .await
        .expect("activity")
        .expect("user exists")
}

fn reasons(a: &UserActivity) -> Vec<Option<FailureReason>> {
    a.logins.iter().map(|e| e.failure.clone()).collect()
}

async fn logins_and_their_failures_are_recorded_newest_first(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@a.example").await;
    user(&*s, "jane@a.example").await;
    let before = now_ms();

    let lease = s
        .lock_for_login(john, &login("192.0.2.1", "SCRAM-SHA-256", true))
        .await
        .expect("login");
    // A second session while the first holds the maildrop: the password was right.
    assert!(matches!(
        s.lock_for_login(john, &login("192.0.2.2", "USER", false))
            .await,
        Err(StoreError::InUse)
    ));
    s.unlock(&lease).await.expect("unlock");
    s.record_failed_login(&failure("john@a.example", FailureReason::WrongPassword))
        .await
        .expect("wrong password");
    s.set_user_enabled(&addr("john@a.example"), false)
        .await
        .expect("disable");
    // The frontend cannot tell a disabled account from a wrong password; the store can.
    s.record_failed_login(&failure("john@a.example", FailureReason::WrongPassword))
        .await
        .expect("disabled");
    s.set_user_enabled(&addr("john@a.example"), true)
        .await
        .expect("enable");
    // Neither of these is john's: an unknown user of his domain, a refused login form.
    s.record_failed_login(&failure("nobody@a.example", FailureReason::WrongPassword))
        .await
        .expect("unknown user");
    s.record_failed_login(&FailedLogin {
        address: None,
        domain: Some(domain("a.example")),
        ..failure("john@a.example", FailureReason::LoginForm)
    })
    .await
    .expect("login form");
    s.record_failed_login(&FailedLogin {
        address: None,
        domain: None,
        ..failure("john@a.example", FailureReason::UnknownUser)
    })
    .await
    .expect("no domain");

    let a = activity(&*s, "john@a.example").await;
    assert_eq!(
        reasons(&a),
        vec![
            Some(FailureReason::Disabled),
            Some(FailureReason::WrongPassword),
            Some(FailureReason::InUse),
            None,
        ]
    );
    let last = a.last_login.expect("last login");
    assert_eq!(last.ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(last.mechanism, "SCRAM-SHA-256");
    assert!(last.tls);
    assert!(last.at >= before && last.at <= now_ms(), "{}", last.at);
    assert_eq!(a.logins[2].ip.as_deref(), Some("192.0.2.2"));
    assert!(!a.logins[2].tls);
    assert_eq!(a.logins[0].ip.as_deref(), Some("198.51.100.7"));
    assert!(activity(&*s, "jane@a.example").await.logins.is_empty());
    assert!(
        s.user_activity(&addr("nobody@a.example"))
            .await
            .expect("activity")
            .is_none()
    );

    // Only the last 20 are shown; the last success is found past them.
    for _ in 0..25 {
        s.record_failed_login(&failure("john@a.example", FailureReason::WrongPassword))
            .await
            .expect("failure");
    }
    let a = activity(&*s, "john@a.example").await;
    assert_eq!(a.logins.len(), RECENT_LOGINS as usize);
    assert!(a.logins.iter().all(|e| e.failure.is_some()));
    assert_eq!(
        a.last_login.map(|l| l.mechanism).as_deref(),
        Some("SCRAM-SHA-256")
    );
}

async fn a_login_delay_refusal_is_recorded(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@slow.example").await;
    let d = domain("slow.example");
    let mut p = s.domain_policies(&d).await.expect("policies");
    p.login_delay_secs = Some(300);
    s.set_domain_policies(&d, &p).await.expect("set");
    let lease = s
        .lock_for_login(john, &login("192.0.2.1", "APOP", false))
        .await
        .expect("login");
    s.unlock(&lease).await.expect("unlock");
    assert!(matches!(
        s.lock_for_login(john, &login("192.0.2.1", "APOP", false))
            .await,
        Err(StoreError::LoginDelay(_))
    ));
    let a = activity(&*s, "john@slow.example").await;
    assert_eq!(reasons(&a), vec![Some(FailureReason::LoginDelay), None]);
}

async fn live_sessions_show_their_logins_client_and_tls(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@a.example").await;
    let jane = user(&*s, "jane@a.example").await;
    let bob = user(&*s, "bob@a.example").await;
    // An earlier session of john's, from elsewhere: not the live one.
    let old = s
        .lock_for_login(john, &login("203.0.113.9", "USER", false))
        .await
        .expect("login");
    s.unlock(&old).await.expect("unlock");
    let _john = s
        .lock_for_login(john, &login("2001:db8::1", "PLAIN", true))
        .await
        .expect("login");
    let _jane = s
        .lock_for_login(jane, &login("192.0.2.3", "USER", false))
        .await
        .expect("login");
    // Locked without a login (an admin tool): nothing to show, and no failure.
    let _bob = s.lock(bob).await.expect("lock");
    let sessions = s.live_sessions(&Scope::All).await.expect("sessions");
    let seen: Vec<(String, Option<String>, Option<bool>)> = sessions
        .into_iter()
        .map(|l| (l.address.to_string(), l.client, l.tls))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("bob@a.example".to_string(), None, None),
            (
                "jane@a.example".to_string(),
                Some("192.0.2.3".to_string()),
                Some(false)
            ),
            (
                "john@a.example".to_string(),
                Some("2001:db8::1".to_string()),
                Some(true)
            ),
        ]
    );
}

async fn sessions_count_what_they_retrieved_and_deleted(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@a.example").await;
    assert_eq!(activity(&*s, "john@a.example").await.last_delivery, None);
    let before = now_ms();
    for body in [
        &b"Subject: one\r\n\r\n1\r\n"[..],
        b"Subject: two\r\n\r\ntwo\r\n",
    ] {
        let outcome = deliver(&*s, body, 1024, &[(john, "")]).await;
        assert!(outcome.iter().all(Result::is_ok));
    }
    let delivered = activity(&*s, "john@a.example")
        .await
        .last_delivery
        .expect("last delivery");
    assert!(delivered >= before && delivered <= now_ms(), "{delivered}");
    let messages = s.list(john).await.expect("list");
    let (first, second) = (&messages[0], &messages[1]);

    // A session that retrieves both and ends without QUIT deletes nothing.
    let lease = s
        .lock_for_login(john, &login("192.0.2.1", "USER", true))
        .await
        .expect("login");
    let both = Transfer {
        messages: 2,
        octets: first.size + second.size,
    };
    s.end_session(&lease, &SessionEnd::new(None, both))
        .await
        .expect("drop");
    // One that retrieves and deletes the first, with QUIT.
    let lease = s
        .lock_for_login(john, &login("192.0.2.1", "USER", true))
        .await
        .expect("login");
    let one = Transfer {
        messages: 1,
        octets: first.size,
    };
    s.end_session(&lease, &SessionEnd::new(Some(&[first.id][..]), one))
        .await
        .expect("quit");
    let a = activity(&*s, "john@a.example").await;
    assert_eq!(
        a.retrieved,
        Transfer {
            messages: 3,
            octets: 2 * first.size + second.size
        }
    );
    assert_eq!(a.deleted, one);
    assert_eq!(s.list(john).await.expect("list").len(), 1);
    // Both sessions gave the lock back.
    assert!(s.live_sessions(&Scope::All).await.expect("live").is_empty());

    // A QUIT whose lease was taken over deletes and counts nothing...
    let lease = s
        .lock_for_login(john, &login("192.0.2.1", "USER", true))
        .await
        .expect("login");
    assert!(s.break_lock(&addr("john@a.example")).await.expect("break"));
    let other = Transfer {
        messages: 1,
        octets: second.size,
    };
    assert!(matches!(
        s.end_session(&lease, &SessionEnd::new(Some(&[second.id][..]), other))
            .await,
        Err(StoreError::LeaseLost)
    ));
    assert_eq!(activity(&*s, "john@a.example").await.deleted, one);
    // ...and the session then ends without it: what it retrieved still counts.
    s.end_session(&lease, &SessionEnd::new(None, other))
        .await
        .expect("drop");
    let a = activity(&*s, "john@a.example").await;
    assert_eq!(a.retrieved.messages, 4);
    assert_eq!(a.deleted, one);
    assert_eq!(s.list(john).await.expect("list").len(), 1);
}

async fn old_activity_is_pruned(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, "john@a.example").await;
    let lease = s
        .lock_for_login(john, &login("192.0.2.1", "USER", true))
        .await
        .expect("login");
    let ten = Transfer {
        messages: 1,
        octets: 10,
    };
    s.end_session(&lease, &SessionEnd::new(None, ten))
        .await
        .expect("end");
    s.record_failed_login(&failure("nobody@a.example", FailureReason::WrongPassword))
        .await
        .expect("failure");
    // A cut-off in the past keeps everything.
    assert_eq!(
        s.prune_activity(now_ms() - 86_400_000)
            .await
            .expect("prune"),
        0
    );
    assert_eq!(activity(&*s, "john@a.example").await.logins.len(), 1);
    // One past tomorrow's start takes today's stats too.
    let gone = s
        .prune_activity(now_ms() + 2 * 86_400_000)
        .await
        .expect("prune");
    assert_eq!(gone, 3, "two events and one day");
    let a = activity(&*s, "john@a.example").await;
    assert!(a.logins.is_empty());
    assert_eq!(a.last_login, None);
    assert_eq!(a.retrieved, Transfer::default());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

stories!(
    logins_and_their_failures_are_recorded_newest_first,
    a_login_delay_refusal_is_recorded,
    live_sessions_show_their_logins_client_and_tls,
    sessions_count_what_they_retrieved_and_deleted,
    old_activity_is_pruned,
);

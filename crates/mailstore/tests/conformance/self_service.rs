//! Stories of issue 22, item 2: the self-service page's store role on both backends. The
//! per-domain switch, who may sign in, and user sessions that end with their user's right to
//! the page (disabled, removed, the page turned off) and never with another user's.

use super::*;

const JOHN: &str = "john@a.example";
const MARY: &str = "mary@a.example";

async fn switch_and_sign_in_lookup(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let d = domain("a.example");
    // Off by default, in the detail too.
    assert!(!s.self_service(&d).await.expect("flag"));
    assert!(
        !s.domain_detail(&d)
            .await
            .expect("detail")
            .expect("d")
            .self_service
    );
    assert!(
        s.self_service_user(&addr(JOHN))
            .await
            .expect("lookup")
            .is_none()
    );

    s.set_self_service(&d, true).await.expect("on");
    assert!(s.self_service(&d).await.expect("flag"));
    assert!(
        s.domain_detail(&d)
            .await
            .expect("detail")
            .expect("d")
            .self_service
    );
    let found = s
        .self_service_user(&addr(JOHN))
        .await
        .expect("lookup")
        .expect("john");
    assert_eq!(found.id, john);
    assert_eq!(found.password_hash, "$argon2id$fake");
    assert!(
        s.self_service_user(&addr("nobody@a.example"))
            .await
            .expect("lookup")
            .is_none()
    );

    // A disabled user, or a disabled domain, may not.
    s.set_user_enabled(&addr(JOHN), false)
        .await
        .expect("disable");
    assert!(
        s.self_service_user(&addr(JOHN))
            .await
            .expect("lookup")
            .is_none()
    );
    s.set_user_enabled(&addr(JOHN), true).await.expect("enable");
    let mut settings = settings_of(&*s, &d).await;
    settings.enabled = false;
    s.update_domain(&d, &settings)
        .await
        .expect("disable domain");
    assert!(
        s.self_service_user(&addr(JOHN))
            .await
            .expect("lookup")
            .is_none()
    );

    let nowhere = domain("nowhere.example");
    assert!(matches!(
        s.set_self_service(&nowhere, true).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.self_service(&nowhere).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn settings_of(s: &dyn Store, d: &DomainName) -> DomainSettings {
    let detail = s.domain_detail(d).await.expect("detail").expect("domain");
    DomainSettings {
        quota: detail.quota,
        max_users: detail.max_users,
        login_forms: detail.login_forms,
        enabled: detail.enabled,
    }
}

async fn sessions_end_with_the_right_to_the_page(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let mary = user(&*s, MARY).await;
    let d = domain("a.example");
    s.set_self_service(&d, true).await.expect("on");
    s.create_user_session("j1", john, "csrf-j1", 1_000)
        .await
        .expect("j1");
    s.create_user_session("j2", john, "csrf-j2", 2_000)
        .await
        .expect("j2");
    s.create_user_session("m1", mary, "csrf-m1", 1_000)
        .await
        .expect("m1");

    let j1 = s.user_session("j1").await.expect("read").expect("j1");
    assert_eq!(j1.user, john);
    assert_eq!(j1.address, addr(JOHN));
    assert_eq!(
        (j1.csrf.as_str(), j1.created_at, j1.last_seen),
        ("csrf-j1", 1_000, 1_000)
    );
    s.touch_user_session("j1", 5_000).await.expect("touch");
    assert_eq!(
        s.user_session("j1")
            .await
            .expect("read")
            .expect("j1")
            .last_seen,
        5_000
    );
    assert!(s.user_session("nope").await.expect("read").is_none());

    // A password change keeps the session that made it and ends the user's others only.
    s.end_user_sessions(&addr(JOHN), Some("j1"))
        .await
        .expect("others");
    assert!(s.user_session("j1").await.expect("read").is_some());
    assert!(s.user_session("j2").await.expect("read").is_none());
    assert!(s.user_session("m1").await.expect("read").is_some());

    // Disabled: no session; and ended for a disabled user too (as provisioning does when it
    // disables), so enabling again does not bring it back.
    s.set_user_enabled(&addr(JOHN), false)
        .await
        .expect("disable");
    assert!(s.user_session("j1").await.expect("read").is_none());
    s.end_user_sessions(&addr(JOHN), None)
        .await
        .expect("end all");
    s.set_user_enabled(&addr(JOHN), true).await.expect("enable");
    assert!(s.user_session("j1").await.expect("read").is_none());
    s.create_user_session("j3", john, "csrf-j3", 3_000)
        .await
        .expect("j3");

    // Pruning by idle time and age.
    s.create_user_session("old", mary, "c", 100)
        .await
        .expect("old");
    s.prune_user_sessions(900, 0).await.expect("prune");
    assert!(s.user_session("j3").await.expect("read").is_some());
    assert!(s.user_session("old").await.expect("read").is_none());
    assert!(s.user_session("m1").await.expect("read").is_some());

    // The page turned off ends the domain's sessions for good.
    s.set_self_service(&d, false).await.expect("off");
    assert!(s.user_session("j3").await.expect("read").is_none());
    s.set_self_service(&d, true).await.expect("on again");
    assert!(s.user_session("j3").await.expect("read").is_none());

    // A removed user's sessions go with them.
    s.create_user_session("m2", mary, "c", 10_000)
        .await
        .expect("m2");
    s.remove_user(&addr(MARY)).await.expect("remove");
    assert!(s.user_session("m2").await.expect("read").is_none());
    s.delete_user_session("m2")
        .await
        .expect("delete is idempotent");
}

stories!(
    switch_and_sign_in_lookup,
    sessions_end_with_the_right_to_the_page,
);

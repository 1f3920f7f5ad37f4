//! Stories of admin accounts managed from the UI (issue 20, item 1): the list, scope,
//! password, disabling and removal, the last enabled super admin, ending an admin's sessions
//! and tokens, token expiry and read-only tokens, and the sign-in record.

use super::*;

async fn listed(s: &dyn Store) -> Vec<(String, bool, u64)> {
    s.list_admins()
        .await
        .expect("list")
        .into_iter()
        .map(|a| (a.account.email, a.account.disabled, a.tokens))
        .collect()
}

async fn admins_are_listed_rescoped_disabled_and_removed(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    s.add_domain(&domain("a.example")).await.expect("add");
    s.add_domain(&domain("b.example")).await.expect("add");
    let root = s
        .add_admin("root@example.com", "h", &Scope::All)
        .await
        .expect("root");
    let anna = s
        .add_admin("anna@example.com", "h", &scope_of(&["a.example"]))
        .await
        .expect("anna");
    s.add_api_token(anna, "ci", "t1", 10).await.expect("token");
    assert_eq!(
        listed(&*s).await,
        vec![
            ("anna@example.com".into(), false, 1),
            ("root@example.com".into(), false, 0),
        ],
        "by e-mail, with token counts"
    );

    s.set_admin_scope(anna, &scope_of(&["b.example", "a.example"]))
        .await
        .expect("scope");
    let a = s.admin_by_id(anna).await.expect("get").expect("anna");
    assert_eq!(a.scope, scope_of(&["a.example", "b.example"]));
    assert!(matches!(
        s.set_admin_scope(anna, &scope_of(&["nowhere.example"]))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.admin_by_id(anna).await.expect("get").expect("anna").scope,
        scope_of(&["a.example", "b.example"]),
        "a failed change leaves the domains as they were"
    );
    s.set_admin_scope(anna, &Scope::All).await.expect("super");
    assert_eq!(
        s.admin_by_id(anna).await.expect("get").expect("anna").scope,
        Scope::All
    );

    s.set_admin_password(anna, "new hash").await.expect("pw");
    assert_eq!(
        s.find_admin("anna@example.com")
            .await
            .expect("find")
            .expect("anna")
            .password_hash,
        "new hash"
    );
    assert!(matches!(
        s.set_admin_password(AdminId(-1), "x").await,
        Err(StoreError::NotFound(_))
    ));

    s.set_admin_disabled(anna, true).await.expect("disable");
    assert!(
        s.admin_by_id(anna)
            .await
            .expect("get")
            .expect("anna")
            .disabled
    );
    s.set_admin_disabled(anna, false).await.expect("enable");
    assert!(
        !s.admin_by_id(anna)
            .await
            .expect("get")
            .expect("anna")
            .disabled
    );

    s.create_admin_session("sess", anna, "c", 10)
        .await
        .expect("session");
    s.remove_admin(anna).await.expect("remove");
    assert!(s.admin_by_id(anna).await.expect("get").is_none());
    assert!(
        s.admin_session("sess").await.expect("session").is_none(),
        "sessions go with the account"
    );
    assert_eq!(
        s.use_api_token("t1", 20).await.expect("use"),
        None,
        "tokens go with the account"
    );
    assert!(matches!(
        s.remove_admin(anna).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(listed(&*s).await.len(), 1);
    let _ = root;
}

async fn the_last_enabled_super_admin_stays(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    s.add_domain(&domain("a.example")).await.expect("add");
    let root = s
        .add_admin("root@example.com", "h", &Scope::All)
        .await
        .expect("root");
    let tenant = s
        .add_admin("ten@example.com", "h", &scope_of(&["a.example"]))
        .await
        .expect("tenant");
    let last = |r: Result<()>, who: &str| match r {
        Err(StoreError::Conflict(m)) => assert_eq!(
            m,
            format!("{who} is the last enabled super admin: make another admin super admin first")
        ),
        other => panic!("expected a conflict, got {other:?}"),
    };
    last(s.remove_admin(root).await, "root@example.com");
    last(s.set_admin_disabled(root, true).await, "root@example.com");
    last(
        s.set_admin_scope(root, &scope_of(&["a.example"])).await,
        "root@example.com",
    );
    let r = s.admin_by_id(root).await.expect("get").expect("root");
    assert!(!r.disabled && r.scope == Scope::All, "nothing changed");
    // A domain admin is no super admin: they may go.
    s.set_admin_disabled(tenant, true).await.expect("disable");

    // With a second enabled super admin the first may go; a disabled one does not count.
    let second = s
        .add_admin("second@example.com", "h", &Scope::All)
        .await
        .expect("second");
    s.set_admin_disabled(second, true).await.expect("disable");
    last(s.remove_admin(root).await, "root@example.com");
    s.set_admin_disabled(second, false).await.expect("enable");
    s.set_admin_disabled(root, true).await.expect("now allowed");
    last(s.remove_admin(second).await, "second@example.com");
    s.remove_admin(root)
        .await
        .expect("a disabled super admin may go");
}

async fn sessions_and_tokens_of_one_admin_end_together(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let root = s
        .add_admin("root@example.com", "h", &Scope::All)
        .await
        .expect("root");
    let anna = s
        .add_admin("anna@example.com", "h", &Scope::All)
        .await
        .expect("anna");
    for (id, admin) in [("s1", anna), ("s2", anna), ("s3", root)] {
        s.create_admin_session(id, admin, "c", 10)
            .await
            .expect("session");
    }
    s.add_api_token(anna, "a", "ta", 10).await.expect("token");
    s.add_api_token(root, "r", "tr", 10).await.expect("token");
    assert_eq!(s.delete_admin_sessions(anna).await.expect("end"), 2);
    assert!(s.admin_session("s1").await.expect("get").is_none());
    assert!(s.admin_session("s2").await.expect("get").is_none());
    assert!(s.admin_session("s3").await.expect("get").is_some());
    assert_eq!(s.delete_admin_sessions(anna).await.expect("end"), 0);
    assert_eq!(s.revoke_admin_tokens(anna).await.expect("revoke"), 1);
    assert_eq!(s.use_api_token("ta", 20).await.expect("use"), None);
    assert!(s.use_api_token("tr", 20).await.expect("use").is_some());
}

async fn tokens_expire_are_read_only_and_die_with_a_disabled_admin(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let root = s
        .add_admin("root@example.com", "h", &Scope::All)
        .await
        .expect("root");
    let anna = s
        .add_admin("anna@example.com", "h", &Scope::All)
        .await
        .expect("anna");
    let new = |name, hash, expires_at, read_only| NewApiToken {
        name,
        token_hash: hash,
        expires_at,
        read_only,
    };
    let t = s
        .create_api_token(anna, &new("ro", "h-ro", Some(1_000), true), 100)
        .await
        .expect("token");
    s.create_api_token(anna, &new("rw", "h-rw", None, false), 100)
        .await
        .expect("token");
    assert_eq!(
        s.use_api_token("h-ro", 999).await.expect("use"),
        Some(TokenHolder {
            admin: anna,
            read_only: true
        })
    );
    assert_eq!(
        s.use_api_token("h-ro", 1_000).await.expect("use"),
        None,
        "expired at its expiry"
    );
    let tokens = s.list_api_tokens(anna).await.expect("list");
    assert_eq!(tokens[0].id, t);
    assert_eq!(tokens[0].expires_at, Some(1_000));
    assert!(tokens[0].read_only);
    assert_eq!(
        tokens[0].last_used,
        Some(999),
        "the refused use is not recorded"
    );
    assert_eq!(tokens[1].expires_at, None);
    assert!(!tokens[1].read_only);
    assert_eq!(
        s.use_api_token("h-rw", i64::MAX / 2).await.expect("use"),
        Some(TokenHolder {
            admin: anna,
            read_only: false
        }),
        "never expires"
    );
    s.set_admin_disabled(anna, true).await.expect("disable");
    assert_eq!(
        s.use_api_token("h-rw", 2_000).await.expect("use"),
        None,
        "a disabled admin's token does nothing"
    );
    s.set_admin_disabled(anna, false).await.expect("enable");
    assert!(s.use_api_token("h-rw", 2_001).await.expect("use").is_some());
    let _ = root;
}

async fn sign_ins_are_recorded_and_listed_newest_first(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let anna = s
        .add_admin("anna@example.com", "h", &Scope::All)
        .await
        .expect("anna");
    let fresh = s.admin_by_id(anna).await.expect("get").expect("anna");
    assert_eq!((fresh.last_signin_at, fresh.last_signin_ip), (None, None));
    s.record_admin_signin(anna, 5_000, Some("192.0.2.7"))
        .await
        .expect("record");
    let a = s.admin_by_id(anna).await.expect("get").expect("anna");
    assert_eq!(a.last_signin_at, Some(5_000));
    assert_eq!(a.last_signin_ip.as_deref(), Some("192.0.2.7"));

    let entry = |actor: &str, action: &str, ip: &str, success| AuditEntry {
        at: 0,
        actor: actor.into(),
        action: action.into(),
        object: "admin".into(),
        domain: None,
        before: None,
        after: None,
        ip: Some(ip.into()),
        success,
    };
    for e in [
        entry("anna@example.com", "signin", "192.0.2.1", false),
        entry("anna@example.com", "signin", "192.0.2.2", true),
        entry("hanna@example.com", "signin", "192.0.2.3", true),
        entry("anna@example.com", "signout", "192.0.2.4", true),
        entry("anna@example.com", "signin", "192.0.2.5", true),
    ] {
        s.record_audit(&e).await.expect("audit");
    }
    let got: Vec<(Option<String>, bool)> = s
        .admin_signins("anna@example.com", 20)
        .await
        .expect("sign-ins")
        .into_iter()
        .map(|e| (e.ip, e.success))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("192.0.2.5".into()), true),
            (Some("192.0.2.2".into()), true),
            (Some("192.0.2.1".into()), false),
        ],
        "only this name's sign-ins, exactly matched, newest first"
    );
    assert_eq!(
        s.admin_signins("anna@example.com", 1)
            .await
            .expect("sign-ins")
            .len(),
        1
    );
}

stories!(
    admins_are_listed_rescoped_disabled_and_removed,
    the_last_enabled_super_admin_stays,
    sessions_and_tokens_of_one_admin_end_together,
    tokens_expire_are_read_only_and_die_with_a_disabled_admin,
    sign_ins_are_recorded_and_listed_newest_first,
);

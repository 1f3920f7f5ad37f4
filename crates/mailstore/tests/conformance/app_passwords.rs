//! Stories of issue 22, item 1: app passwords on both backends. Labels are unique per user and
//! limited in number; their secrets and last use are kept; revoking one deletes the maildrop
//! lock of the session that logged in with it, and no other; the domain switch reaches logins.

use super::*;

const JOHN: &str = "john@ap.example";

fn new<'a>(label: &'a str, tag: &'a str) -> NewAppPassword<'a> {
    NewAppPassword {
        label,
        tag,
        password_hash: "$argon2id$app",
        scram: "SCRAM-SHA-256$4096:c2FsdA==$a:b",
    }
}

fn login() -> LoginRecord {
    LoginRecord {
        ip: Some("192.0.2.5".parse().expect("ip")),
        mechanism: "PLAIN".into(),
        tls: true,
    }
}

async fn add_list_and_limits(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    let john = user(&*s, JOHN).await;
    let a = addr(JOHN);
    let added = s
        .add_app_password(&a, &new("  Anna's phone ", "ab12"))
        .await
        .expect("add");
    assert_eq!(added.label, "Anna's phone", "trimmed");
    assert!(added.created_at > 0);
    assert_eq!(added.last_used_at, None);
    assert!(matches!(
        s.add_app_password(&a, &new("Anna's phone", "cd34")).await,
        Err(StoreError::Conflict(_))
    ));
    for bad in ["", "   ", "tab\there", &"x".repeat(MAX_LABEL_CHARS + 1)] {
        assert!(
            matches!(
                s.add_app_password(&a, &new(bad, "0000")).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        s.add_app_password(&addr("nobody@ap.example"), &new("x", "0000"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    for i in 1..MAX_APP_PASSWORDS {
        s.add_app_password(&a, &new(&format!("device {i:02}"), "0000"))
            .await
            .expect("add up to the limit");
    }
    assert!(matches!(
        s.add_app_password(&a, &new("one too many", "0000")).await,
        Err(StoreError::Invalid(_))
    ));
    let listed = s.list_app_passwords(&a).await.expect("list");
    assert_eq!(listed.len(), MAX_APP_PASSWORDS);
    assert_eq!(listed[0].label, "Anna's phone", "by label");
    let secrets = s.app_password_secrets(john).await.expect("secrets");
    assert_eq!(secrets.len(), MAX_APP_PASSWORDS);
    assert_eq!(secrets[0].tag, "ab12");
    assert_eq!(secrets[0].password_hash, "$argon2id$app");
    // Another user's list is their own.
    user(&*s, "jane@ap.example").await;
    assert!(
        s.list_app_passwords(&addr("jane@ap.example"))
            .await
            .expect("list")
            .is_empty()
    );
    // Removing the user removes their app passwords.
    s.remove_user(&a).await.expect("remove");
    assert!(
        s.app_password_secrets(john)
            .await
            .expect("secrets")
            .is_empty()
    );
}

async fn last_use_is_recorded(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    user(&*s, JOHN).await;
    let a = addr(JOHN);
    let added = s
        .add_app_password(&a, &new("laptop", "ab12"))
        .await
        .expect("add");
    s.record_app_password_use(added.id, Some("198.51.100.7"), "SCRAM-SHA-256")
        .await
        .expect("record");
    let listed = s.list_app_passwords(&a).await.expect("list");
    assert!(
        listed[0]
            .last_used_at
            .is_some_and(|t| t >= added.created_at)
    );
    assert_eq!(listed[0].last_ip.as_deref(), Some("198.51.100.7"));
    assert_eq!(listed[0].last_mechanism.as_deref(), Some("SCRAM-SHA-256"));
}

/// Revoking ends the session of that device only: its lease goes, so its next renewal reports
/// it gone; a session of the main password (another user here, one maildrop lock per user) and
/// the device's siblings stay.
async fn revoking_ends_that_devices_session_only(b: impl Backend) {
    let s = b.open(lock("n1", 30_000)).await;
    let john = user(&*s, JOHN).await;
    let jane = user(&*s, "jane@ap.example").await;
    let a = addr(JOHN);
    let phone = s
        .add_app_password(&a, &new("phone", "ab12"))
        .await
        .expect("add");
    let laptop = s
        .add_app_password(&a, &new("laptop", "cd34"))
        .await
        .expect("add");
    let lease = s.lock_for_login(john, &login()).await.expect("lock");
    assert!(
        s.bind_lease_to_app_password(&lease, phone.id)
            .await
            .expect("bind")
    );
    let other = s.lock_for_login(jane, &login()).await.expect("lock jane");
    // Revoking the laptop leaves the phone's session alone.
    assert_eq!(
        s.revoke_app_password(&a, "laptop").await.expect("revoke"),
        0
    );
    assert!(s.renew_leases().await.expect("renew").is_empty());
    assert!(
        !s.bind_lease_to_app_password(&lease, laptop.id)
            .await
            .expect("bind revoked"),
        "a revoked app password cannot be bound"
    );
    assert_eq!(
        s.revoke_app_password(&a, " phone ").await.expect("revoke"),
        1
    );
    assert_eq!(s.renew_leases().await.expect("renew"), vec![lease.token]);
    assert!(matches!(
        s.revoke_app_password(&a, "phone").await,
        Err(StoreError::NotFound(_))
    ));
    // The maildrop is free again; jane's session is untouched.
    s.lock(john).await.expect("free again");
    s.unlock(&other).await.expect("jane unlocks");
    assert!(
        s.app_password_secrets(john)
            .await
            .expect("secrets")
            .is_empty()
    );
}

async fn app_passwords_only_reaches_the_login_lookup(b: impl Backend) {
    let s = b.open(LockOptions::default()).await;
    user(&*s, JOHN).await;
    let d = domain("ap.example");
    assert!(!s.app_passwords_only(&d).await.expect("read"));
    assert!(
        !s.find_user(&addr(JOHN))
            .await
            .expect("find")
            .expect("user")
            .app_passwords_only
    );
    s.set_allow_apop(&d, true).await.expect("allow apop");
    let apop = s
        .find_apop_user(&addr(JOHN))
        .await
        .expect("find")
        .expect("user");
    assert!(apop.domain_allows);
    s.set_app_passwords_only(&d, true).await.expect("set");
    let apop = s
        .find_apop_user(&addr(JOHN))
        .await
        .expect("find")
        .expect("user");
    assert!(!apop.domain_allows, "APOP's secret is a main password too");
    assert!(s.app_passwords_only(&d).await.expect("read"));
    assert!(
        s.find_user(&addr(JOHN))
            .await
            .expect("find")
            .expect("user")
            .app_passwords_only
    );
    assert!(
        s.domain_detail(&d)
            .await
            .expect("detail")
            .expect("domain")
            .app_passwords_only
    );
    assert!(matches!(
        s.set_app_passwords_only(&domain("none.example"), true)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

stories!(
    add_list_and_limits,
    last_use_is_recorded,
    revoking_ends_that_devices_session_only,
    app_passwords_only_reaches_the_login_lookup,
);

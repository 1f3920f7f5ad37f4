//! The dashboard (issue "Admin UI", item 6): the range choice, the charts' axes and gridlines,
//! the top lists in the admin's scope, migration counts, and IDN domains shown in Unicode with
//! their A-label.

use mailstore::{
    Delivery, Directory, FailedLogin, FailureReason, LoginRecord, Maildrops, Parcel, Recipient,
    Scope, UserId,
};

use crate::support::*;

/// Adds `address` with `bytes` of mail.
async fn mailbox(env: &Env, address: &str, bytes: usize) -> UserId {
    let id = env
        .store
        .add_user(&addr(address), "$argon2id$v=19$m=19456,t=2,p=1$x$y", None)
        .await
        .expect("add user");
    let out = env
        .store
        .deliver(Parcel {
            blob: None,
            chunks: 0,
            tail: vec![b'x'; bytes],
            size: bytes as u64,
            recipients: vec![Recipient {
                user: id,
                prefix: Vec::new(),
            }],
            dedup: None,
        })
        .await
        .expect("deliver");
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    id
}

fn record() -> LoginRecord {
    LoginRecord {
        ip: Some("192.0.2.7".parse().expect("ip")),
        mechanism: "USER".into(),
        tls: true,
    }
}

/// A POP3 login of `user` and its QUIT, as the frontend records them.
async fn login(env: &Env, user: UserId) {
    let lease = env
        .store
        .lock_for_login(user, &record())
        .await
        .expect("login");
    env.store.commit_update(&lease, &[]).await.expect("quit");
}

/// The body of the `<table id="…">` of a page.
fn table<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table {id}: {page}"));
    let end = page[start..]
        .find("</table>")
        .map_or(page.len(), |e| start + e);
    &page[start..end]
}

#[tokio::test]
async fn the_range_is_chosen_with_plain_links() {
    let env = Env::with_domains().await;
    let root = env.super_admin().await;
    for (query, title, current, others, x_labels) in [
        ("", "Last 24 hours", "24h", ["7d", "30d"], 8),
        ("?range=24h", "Last 24 hours", "24h", ["7d", "30d"], 8),
        ("?range=7d", "Last 7 days", "7d", ["24h", "30d"], 7),
        ("?range=30d", "Last 30 days", "30d", ["24h", "7d"], 6),
        ("?range=1y", "Last 24 hours", "24h", ["7d", "30d"], 8),
    ] {
        let page = env.get(&root, &format!("/{query}")).await;
        assert_eq!(page.status, 200, "{query}");
        let body = page.body;
        assert!(
            body.contains(&format!("id=\"range-title\">{title}<")),
            "{query}: {body}"
        );
        assert!(body.contains(&format!(
            "<strong aria-current=\"page\" id=\"range-{current}\">"
        )));
        for other in others {
            assert!(
                body.contains(&format!("id=\"range-{other}\" href=\"/?range={other}\"")),
                "{query}: a link to {other}"
            );
        }
        // Two charts (activity, failed logins), each with its time ticks.
        assert_eq!(
            body.matches("class=\"x-label\"").count(),
            2 * x_labels,
            "{query}"
        );
        assert!(!body.contains("<script"), "no script on the dashboard");
    }
}

#[tokio::test]
async fn the_charts_have_axes_gridlines_and_labelled_bars() {
    let env = Env::with_domains().await;
    let john = mailbox(&env, "john@a.test", 100).await;
    login(&env, john).await;
    for _ in 0..3 {
        env.store
            .record_failed_login(&FailedLogin {
                login: record(),
                address: Some(addr("john@a.test")),
                domain: None,
                reason: FailureReason::WrongPassword,
            })
            .await
            .expect("failure");
    }
    let body = env.get(&env.super_admin().await, "/").await.body;
    for id in ["activity-chart", "failed-chart"] {
        let start = body.find(&format!("id=\"{id}\"")).expect(id);
        let svg = &body[start..start + body[start..].find("</svg>").expect("svg end")];
        assert_eq!(
            svg.matches("class=\"axis\"").count(),
            2,
            "{id}: x and y axes"
        );
        assert!(svg.matches("class=\"gridline\"").count() >= 2, "{id}");
        assert!(
            svg.contains("class=\"y-label\" x=\"46\" y=\"193\">0<"),
            "{id}: {svg}"
        );
        assert!(svg.contains("class=\"x-label\""), "{id}");
    }
    // One delivery and one login this hour: both bars reach the top gridline, labelled 1.
    assert!(body.contains("POP3 logins (1)") && body.contains("messages delivered (1)"));
    assert!(
        body.contains("class=\"y-label\" x=\"46\" y=\"13\">1<"),
        "{body}"
    );
    assert!(body.contains("<rect class=\"logins\""));
    assert!(body.contains(" 1 POP3 logins</title>"));
    assert!(body.contains("failed POP3 logins (3)"), "{body}");
    assert!(body.contains("<rect class=\"failed\""));
    assert!(body.contains(" 3 failed logins</title>"));
}

#[tokio::test]
async fn top_lists_link_to_their_pages_and_stay_in_scope() {
    let env = Env::with_domains().await;
    let anna = mailbox(&env, "anna@a.test", 3000).await;
    mailbox(&env, "alf@a.test", 1000).await;
    let bert = mailbox(&env, "bert@b.test", 9000).await;
    for id in [anna, bert, bert] {
        login(&env, id).await;
    }
    let root = env.get(&env.super_admin().await, "/").await.body;
    let users = table(&root, "top-users-storage");
    let (b, a) = (
        users.find("/domains/b.test/users/bert").expect("bert"),
        users.find("/domains/a.test/users/anna").expect("anna"),
    );
    assert!(b < a, "the biggest first: {users}");
    assert!(users.contains(">8.8 KiB<"), "{users}");
    let domains = table(&root, "top-domains-storage");
    assert!(domains.contains("href=\"/domains/b.test\"") && domains.contains("/domains/a.test"));
    for id in ["top-domains-logins", "top-users-logins"] {
        let logins = table(&root, id);
        assert!(
            logins.find("b.test").expect("b") < logins.find("a.test").expect("a"),
            "{id}: {logins}"
        );
    }
    assert!(table(&root, "top-users-logins").contains("href=\"/domains/b.test/users/bert\""));

    let tenant = env.get(&env.domain_admin().await, "/").await.body;
    for id in [
        "top-domains-storage",
        "top-domains-logins",
        "top-users-storage",
        "top-users-logins",
    ] {
        let list = table(&tenant, id);
        assert!(list.contains("a.test"), "{id}: {list}");
        assert!(
            !list.contains("b.test") && !list.contains("bert"),
            "{id}: {list}"
        );
    }
    assert!(!tenant.contains("b.test"), "nothing of b.test anywhere");
}

#[tokio::test]
async fn migration_counts_show_for_domains_in_migration_mode() {
    let env = Env::with_domains().await;
    let moved = mailbox(&env, "anna@a.test", 10).await;
    mailbox(&env, "alf@a.test", 10).await;
    mailbox(&env, "bert@b.test", 10).await;
    let root = env.super_admin().await;
    assert!(!env.get(&root, "/").await.body.contains("migration-counts"));
    env.store
        .set_migrate_from(&domain("a.test"), Some("pop3s://old.a.test:995"))
        .await
        .expect("migrate");
    env.store.finish_migration(moved).await.expect("moved");
    let body = env.get(&root, "/").await.body;
    assert!(
        body.contains(
            "1 domain in migration mode: <strong>1</strong> users moved, <strong>1</strong> to go"
        ),
        "{body}"
    );
    let other = env
        .add_admin("b@admin.test", Scope::Domains(vec![domain("b.test")]))
        .await;
    let theirs = env.get(&env.sign_in(other).await, "/").await.body;
    assert!(
        !theirs.contains("migration-counts"),
        "b.test is not migrating"
    );
}

#[tokio::test]
async fn idn_domains_show_in_unicode_beside_their_a_label() {
    let env = Env::new().await;
    let idn = domain("münchen.example");
    assert_eq!(idn.as_str(), "xn--mnchen-3ya.example", "stored as A-labels");
    env.store.add_domain(&idn).await.expect("add");
    mailbox(&env, "max@xn--mnchen-3ya.example", 500).await;
    let root = env.super_admin().await;
    let shown = "münchen.example</a> <span class=\"muted a-label\">xn--mnchen-3ya.example</span>";
    let dashboard = env.get(&root, "/").await.body;
    assert!(
        table(&dashboard, "top-domains-storage").contains(shown),
        "{dashboard}"
    );
    assert!(
        table(&dashboard, "top-users-storage").contains(&format!(
            "href=\"/domains/xn--mnchen-3ya.example/users/max\">max@{shown}"
        )),
        "{dashboard}"
    );
    let domains = env.get(&root, "/domains").await.body;
    assert!(
        domains.contains(&format!(
            "<a href=\"/domains/xn--mnchen-3ya.example\">{shown}"
        )),
        "{domains}"
    );
    env.store
        .add_domain(&domain("plain.example"))
        .await
        .expect("add");
    let domains = env.get(&root, "/domains").await.body;
    assert!(domains.contains("<a href=\"/domains/plain.example\">plain.example</a>"));
}

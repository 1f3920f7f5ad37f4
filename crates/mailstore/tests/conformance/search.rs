//! The admin search box (issue "Admin UI", item 3): users by the start of their local part,
//! domains by name or alias, the exact address through an alias, each in scope, on both
//! backends.

use super::*;

fn users(hits: &SearchHits) -> Vec<String> {
    hits.users.iter().map(|u| u.address.to_string()).collect()
}

fn domains(hits: &SearchHits) -> Vec<String> {
    hits.domains.iter().map(|d| d.name.to_string()).collect()
}

async fn search_finds_users_by_prefix_and_domains_by_name_or_alias_in_scope(b: impl Backend) {
    let s = b.open(lock("n1", 30_000)).await;
    for d in ["a.example", "b.example", "shop.test"] {
        s.add_domain(&domain(d)).await.expect("domain");
    }
    s.add_alias(&domain("alias.example"), &domain("a.example"))
        .await
        .expect("alias");
    for a in [
        "john@a.example",
        "john.smith@a.example",
        "johnny@b.example",
        "jo-ann@b.example",
        "joe@shop.test",
        "mary@a.example",
        "shopkeeper@a.example",
    ] {
        s.add_user(&addr(a), "$argon2id$x", None)
            .await
            .expect("user");
    }
    let term = |t: &str| SearchTerm::parse(t).expect("term");
    let all = Scope::All;
    let tenant = Scope::Domains(vec![domain("a.example")]);

    // A word: local parts starting with it in every domain, in byte order; domains containing it.
    let hits = s.search(&all, &term("jo"), 10).await.expect("search");
    assert_eq!(
        users(&hits),
        [
            "jo-ann@b.example",
            "joe@shop.test",
            "john@a.example",
            "john.smith@a.example",
            "johnny@b.example"
        ]
    );
    assert!(hits.domains.is_empty() && hits.exact.is_none());
    let hits = s.search(&tenant, &term("jo"), 10).await.expect("search");
    assert_eq!(users(&hits), ["john@a.example", "john.smith@a.example"]);
    // Not a substring of the local part: the start only.
    assert!(
        s.search(&all, &term("ohn"), 10)
            .await
            .unwrap()
            .users
            .is_empty()
    );
    // The limit cuts the list in order.
    let hits = s.search(&all, &term("jo"), 2).await.expect("search");
    assert_eq!(users(&hits), ["jo-ann@b.example", "joe@shop.test"]);

    // Domains by a part of their name or an alias, in scope.
    let hits = s.search(&all, &term("shop"), 10).await.expect("search");
    assert_eq!(domains(&hits), ["shop.test"]);
    assert_eq!(users(&hits), ["shopkeeper@a.example"]);
    let hits = s.search(&all, &term("alias"), 10).await.expect("search");
    assert_eq!(domains(&hits), ["a.example"]);
    assert!(
        s.search(&tenant, &term("b.exa"), 10)
            .await
            .unwrap()
            .domains
            .is_empty()
    );

    // local@domain: the users of domains (or aliases) starting with the domain part, and the
    // exact user through an alias.
    let hits = s
        .search(&all, &term("JOHN@alias.example"), 10)
        .await
        .unwrap();
    assert_eq!(hits.exact, Some(addr("john@a.example")));
    assert_eq!(users(&hits), ["john@a.example", "john.smith@a.example"]);
    assert!(hits.domains.is_empty());
    let hits = s.search(&all, &term("john@b"), 10).await.unwrap();
    assert_eq!(users(&hits), ["johnny@b.example"]);
    assert_eq!(hits.exact, None);
    let hits = s
        .search(&tenant, &term("johnny@b.example"), 10)
        .await
        .unwrap();
    assert!(
        hits.users.is_empty() && hits.exact.is_none(),
        "out of scope"
    );
    // @domain: domains only.
    let hits = s.search(&all, &term("@sh"), 10).await.unwrap();
    assert_eq!(domains(&hits), ["shop.test"]);
    assert!(hits.users.is_empty());
    assert_eq!(SearchTerm::parse("  "), None);
}

/// UTF-8 local parts (RFC 6531) sort after ASCII ones in byte order and are found by their
/// start however the term is typed (upper case, a decomposed `ö`), the exact address too.
async fn search_finds_utf8_local_parts(b: impl Backend) {
    let s = b.open(lock("n1", 30_000)).await;
    s.add_domain(&domain("bücher.example"))
        .await
        .expect("domain");
    for a in [
        "jöhn@bücher.example",
        "john@bücher.example",
        "jürgen@bücher.example",
        "用户@bücher.example",
    ] {
        s.add_user(&addr(a), "$argon2id$x", None)
            .await
            .expect("user");
    }
    let term = |t: &str| SearchTerm::parse(t).expect("term");
    let found = |hits: &SearchHits| users(hits);
    let hits = s.search(&Scope::All, &term("j"), 10).await.expect("search");
    assert_eq!(
        found(&hits),
        [
            "john@xn--bcher-kva.example",
            "jöhn@xn--bcher-kva.example",
            "jürgen@xn--bcher-kva.example"
        ]
    );
    for typed in ["JÖ", "jo\u{0308}"] {
        let hits = s
            .search(&Scope::All, &term(typed), 10)
            .await
            .expect("search");
        assert_eq!(found(&hits), ["jöhn@xn--bcher-kva.example"], "{typed:?}");
    }
    let hits = s
        .search(&Scope::All, &term("用"), 10)
        .await
        .expect("search");
    assert_eq!(found(&hits), ["用户@xn--bcher-kva.example"]);
    let hits = s
        .search(&Scope::All, &term("JO\u{0308}HN@bücher.example"), 10)
        .await
        .expect("search");
    assert_eq!(hits.exact, Some(addr("jöhn@bücher.example")));
}

stories!(
    search_finds_users_by_prefix_and_domains_by_name_or_alias_in_scope,
    search_finds_utf8_local_parts
);

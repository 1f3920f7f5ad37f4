//! The help desk's search box. Users are found by a prefix of their local part, as an index range
//! (`users_by_localpart`, or the `(domain_id, localpart)` key within a domain) walked in order
//! and cut at the limit, so a short term in a domain of 100,000 users reads `limit` rows, not
//! the domain. Domains are few: they are matched by substring or prefix with a plain filter.

use sqlx::{ColumnIndex, Encode, Executor, Row, Type};

use super::{Column, Dialect, SqlStore, domain_row, scope_binds, select_domains, sql, user_row};
use super::{DomainName, LocalPart};
use crate::convert::*;
use crate::*;

/// The upper end of the range of strings starting with `prefix`. Both backends compare local
/// parts bytewise here, which for UTF-8 is code point order, and no local part holds U+10FFFF
/// (a noncharacter, refused by `LocalPart::parse`): every `prefix…` sorts below
/// `prefix\u{10FFFF}`, the UTF-8 ones (`jöhn` for `j`) included.
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

pub(super) async fn search<D: Dialect>(
    store: &SqlStore<D>,
    scope: &Scope,
    term: &SearchTerm,
    limit: u64,
) -> Result<SearchHits>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'a> &'a str: Encode<'a, D> + Type<D>,
    i64: Column<D>,
    bool: Column<D>,
    String: Column<D>,
    Option<i64>: Column<D>,
    Option<String>: Column<D>,
    usize: ColumnIndex<D::Row>,
{
    let (all, list) = scope_binds::<D>(scope);
    let limit = to_i64(limit);
    let (local, domain, domain_test) = match term {
        SearchTerm::Word(w) => (w.as_str(), w.as_str(), "> 0"),
        SearchTerm::Address { local, domain } => (local.as_str(), domain.as_str(), "= 1"),
    };
    // A name or one of its aliases contains the text (`> 0`) or starts with it (`= 1`), the
    // text bound as parameter `n`.
    let domain_match = |n: u8| {
        format!(
            "({{find}}(d.name, ${n}) {domain_test} OR EXISTS (SELECT 1 FROM domain_aliases a
               WHERE a.domain_id = d.id AND {{find}}(a.alias, ${n}) {domain_test}))"
        )
    };
    let mut tx = store.pool.begin().await?;
    let mut hits = SearchHits::default();

    // A word looks for users in every domain in scope; `local@dom` only in the domains it names.
    let by_address = matches!(term, SearchTerm::Address { .. });
    let users_where = if by_address {
        format!("AND {}", domain_match(6))
    } else {
        String::new()
    };
    if !local.is_empty() {
        let query = sql::<D>(&format!(
            "SELECT u.localpart, u.quota_bytes, u.quota_messages, u.used_bytes,
                    u.used_messages, u.enabled, u.password_scheme, {}, d.name
             FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE ($1 OR d.name IN (SELECT {{each}}($2)))
               AND u.localpart {{bytewise}} >= $3 AND u.localpart {{bytewise}} < $4
               {users_where}
             ORDER BY u.localpart {{bytewise}}, d.name {{bytewise}} LIMIT $5",
            D::millis("u.created_at")
        ));
        let mut query = sqlx::query(query)
            .bind(all)
            .bind(&list)
            .bind(local)
            .bind(prefix_end(local))
            .bind(limit);
        if by_address {
            query = query.bind(domain);
        }
        let rows = query.fetch_all(&mut *tx).await?;
        for r in &rows {
            let name = DomainName::parse(&r.try_get::<String, _>(8)?)?;
            hits.users.push(user_row(r, &name)?);
        }
    }

    // `john@example.com` or `john@alias.example` names one user: found by the keys, whatever
    // the prefix search above returned.
    if let SearchTerm::Address { local, domain } = term
        && let (Ok(local), Ok(domain)) = (LocalPart::parse(local), DomainName::parse(domain))
    {
        let row = sqlx::query(sql::<D>(
            "SELECT d.name FROM users u JOIN domains d ON d.id = u.domain_id
             WHERE ($1 OR d.name IN (SELECT {each}($2))) AND u.localpart = $3
               AND (d.name = $4 OR d.id = (SELECT a.domain_id FROM domain_aliases a
                                           WHERE a.alias = $4))",
        ))
        .bind(all)
        .bind(&list)
        .bind(local.as_str())
        .bind(domain.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = row {
            hits.exact = Some(Address {
                local,
                domain: DomainName::parse(&r.try_get::<String, _>(0)?)?,
            });
        }
    }

    // Domains: for a word, or for `@dom`; `john@dom` is after a user.
    if !domain.is_empty() && (!by_address || local.is_empty()) {
        let rows = sqlx::query(select_domains::<D>(&format!(
            "WHERE ($1 OR d.name IN (SELECT {{each}}($2))) AND {}
             ORDER BY d.name {{bytewise}} LIMIT $4",
            domain_match(3)
        )))
        .bind(all)
        .bind(&list)
        .bind(domain)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        hits.domains = rows.iter().map(domain_row).collect::<Result<_>>()?;
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_range_holds_every_local_part_with_the_prefix() {
        let end = prefix_end("jo");
        for inside in [
            "jo",
            "john",
            "jo~~",
            "jo.smith",
            "jo-9",
            "joë",
            "jo用户",
            "jo\u{FFFD}",
        ] {
            assert!(inside >= "jo" && inside < end.as_str(), "{inside}");
        }
        for outside in ["j", "jn", "jp", "k", "jö", "j\u{7f}"] {
            assert!(!(outside >= "jo" && outside < end.as_str()), "{outside}");
        }
    }
}

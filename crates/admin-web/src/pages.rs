//! Browser pages, one module per resource: its routes, handlers and template structs.

pub mod activity;
pub mod admins;
pub mod alarms;
pub mod app_passwords;
pub mod assets;
pub mod audit;
pub mod bin;
pub mod bulletins;
pub mod dashboard;
pub mod domains;
pub mod export;
pub mod health;
pub mod import;
pub mod me;
pub mod oauth;
pub mod policies;
pub mod search;
pub mod sessions;
pub mod signin;
pub mod tokens;
pub mod traces;
pub mod users;

pub use crate::provision::ListQuery;

/// Pager numbers for a template (`pager.html`): the page shown (the last one for a page number
/// past the end), its size, and the listing's other query parameters, which its links and its
/// jump-to-page form carry along. Links are relative (`?page=2`): they stay on the page's path.
#[derive(Debug, Clone)]
pub struct Pager {
    pub page: u64,
    pub pages: u64,
    pub total: u64,
    pub per_page: u64,
    pub q: String,
    /// The listing's other parameters (search, filters), in order.
    pub params: Vec<(String, String)>,
}

/// The page sizes a listing offers.
pub const PAGE_SIZES: [u64; 3] = [25, 100, 500];

impl Pager {
    pub fn new(query: &ListQuery, total: u64, page_size: u64) -> Self {
        let params = if query.q.is_empty() {
            Vec::new()
        } else {
            vec![("q".to_owned(), query.q.clone())]
        };
        Self {
            page: query.page_within(total, page_size),
            pages: total.div_ceil(page_size.max(1)).max(1),
            total,
            per_page: page_size,
            q: query.q.clone(),
            params,
        }
    }

    /// The same pager with these parameters for its links instead of `q`.
    pub fn with_params(mut self, params: Vec<(String, String)>) -> Self {
        self.params = params;
        self
    }

    pub fn has_prev(&self) -> bool {
        self.page > 1
    }

    pub fn has_next(&self) -> bool {
        self.page < self.pages
    }

    /// A relative link to page `page` of the same listing.
    pub fn href(&self, page: u64) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.params {
            query.append_pair(k, v);
        }
        query.append_pair("per_page", &self.per_page.to_string());
        query.append_pair("page", &page.to_string());
        format!("?{}", query.finish())
    }

    /// The page sizes to offer, with whether each is the current one.
    pub fn sizes(&self) -> Vec<(u64, bool)> {
        let mut sizes: Vec<u64> = PAGE_SIZES.to_vec();
        if !sizes.contains(&self.per_page) {
            sizes.push(self.per_page);
            sizes.sort_unstable();
        }
        sizes.into_iter().map(|n| (n, n == self.per_page)).collect()
    }
}

/// Bytes for people: 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A Unix-milliseconds time as `2026-11-26 16:40:00 UTC`.
pub fn human_time(ms: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "-".into())
}

/// The Unicode form of a domain stored as A-labels (`xn--mnchen-3ya.de` → `münchen.de`), for
/// showing beside the stored name; `None` when the name has no A-label or does not decode.
pub fn unicode_domain(name: &str) -> Option<String> {
    if !name.split('.').any(|label| label.starts_with("xn--")) {
        return None;
    }
    match idna::domain_to_unicode(name) {
        (unicode, Ok(())) if unicode != name => Some(unicode),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::unicode_domain;

    #[test]
    fn a_labels_are_shown_in_unicode_and_plain_names_not_at_all() {
        assert_eq!(
            unicode_domain("xn--mnchen-3ya.de").as_deref(),
            Some("münchen.de")
        );
        assert_eq!(
            unicode_domain("mail.xn--bcher-kva.example").as_deref(),
            Some("mail.bücher.example")
        );
        assert_eq!(unicode_domain("example.com"), None);
        assert_eq!(
            unicode_domain("xn--invalid-.example"),
            None,
            "does not decode"
        );
    }
}

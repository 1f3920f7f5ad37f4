//! Browser pages, one module per resource: its routes, handlers and template structs.

pub mod assets;
pub mod audit;
pub mod dashboard;
pub mod domains;
pub mod export;
pub mod health;
pub mod import;
pub mod policies;
pub mod sessions;
pub mod signin;
pub mod tokens;
pub mod users;

pub use crate::provision::ListQuery;

/// Pager numbers for a template.
#[derive(Debug, Clone)]
pub struct Pager {
    pub page: u64,
    pub pages: u64,
    pub total: u64,
    pub q: String,
}

impl Pager {
    pub fn new(query: &ListQuery, total: u64, page_size: u64) -> Self {
        Self {
            page: query.page(),
            pages: total.div_ceil(page_size.max(1)).max(1),
            total,
            q: query.q.clone(),
        }
    }

    pub fn has_prev(&self) -> bool {
        self.page > 1
    }

    pub fn has_next(&self) -> bool {
        self.page < self.pages
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

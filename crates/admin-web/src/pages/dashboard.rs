//! The dashboard: totals in the admin's scope; deliveries, logins and failed logins over the
//! last 24 hours, 7 days or 30 days, drawn as SVG on the server (no script); the top domains and
//! users by storage and by logins in that range; imported passwords and migration progress.
//! Every figure comes from a store query scoped in SQL.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use mailstore::{
    Address, DomainName, FailedLogins, HourlyStat, LOGIN_SAMPLE, MigrationCounts, Ranked,
};
use serde::Deserialize;

use crate::auth::Chrome;
use crate::error::AppError;
use crate::pages::domains::segment;
use crate::pages::{human_bytes, unicode_domain};
use crate::provision::Actor;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(show))
}

/// How far back the dashboard looks (`?range=24h|7d|30d`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Range {
    #[default]
    Day,
    Week,
    Month,
}

impl Range {
    const ALL: [Range; 3] = [Range::Day, Range::Week, Range::Month];

    /// An unknown value shows the default rather than an error page: the range is only a view.
    fn parse(raw: Option<&str>) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| Some(r.key()) == raw)
            .unwrap_or_default()
    }

    fn key(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Range::Day => "Last 24 hours",
            Range::Week => "Last 7 days",
            Range::Month => "Last 30 days",
        }
    }

    /// Thirty days of hours would be 720 bars too thin to read: that range is drawn per day.
    fn per_day(self) -> bool {
        self == Range::Month
    }

    fn slots(self) -> i64 {
        match self {
            Range::Day => 24,
            Range::Week => 7 * 24,
            Range::Month => 30,
        }
    }
}

#[derive(Deserialize)]
struct DashboardQuery {
    range: Option<String>,
}

/// Activity in one slot of the chart (an hour, or a day for 30 days).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    /// Unix time / 3600 of the slot's start.
    hour: i64,
    delivered: u64,
    logins: u64,
    failed: u64,
}

/// The range's slots, oldest first, the current hour (or day) last, with the store's counts
/// added into them; counts outside the range are left out.
fn slots(range: Range, this_hour: i64, stats: &[HourlyStat], failed: &[FailedLogins]) -> Vec<Slot> {
    let n = range.slots();
    let (first, width) = if range.per_day() {
        ((this_hour.div_euclid(24) - (n - 1)) * 24, 24)
    } else {
        (this_hour - (n - 1), 1)
    };
    let mut slots: Vec<Slot> = (0..n)
        .map(|i| Slot {
            hour: first + i * width,
            ..Slot::default()
        })
        .collect();
    let index = |hour: i64| usize::try_from((hour - first).div_euclid(width)).ok();
    for s in stats {
        if let Some(slot) = index(s.hour).and_then(|i| slots.get_mut(i)) {
            slot.delivered += s.delivered;
            slot.logins += s.logins;
        }
    }
    for f in failed {
        if let Some(slot) = index(f.hour).and_then(|i| slots.get_mut(i)) {
            slot.failed += f.failed;
        }
    }
    slots
}

// ---------------------------------------------------------------------------------------------
// The chart, in SVG user units: a plot area with a labelled y axis and gridlines at round
// values, and labelled x ticks at hour or day boundaries (UTC).

const VIEW_WIDTH: u32 = 900;
const VIEW_HEIGHT: u32 = 226;
const PLOT_LEFT: u32 = 52;
/// 840 divides into 24, 168 and 30 slots alike, so every slot is a whole number of units.
const PLOT_WIDTH: u32 = 840;
const PLOT_TOP: u32 = 10;
const PLOT_HEIGHT: u32 = 180;
const PLOT_BOTTOM: u32 = PLOT_TOP + PLOT_HEIGHT;

struct Bar {
    x: u32,
    y: u32,
    width: u32,
    height: u32,
    class: &'static str,
    title: String,
}

/// A horizontal gridline with its value on the y axis.
struct GridLine {
    y: u32,
    label: String,
}

/// A vertical gridline with its time under the x axis.
struct XTick {
    x: u32,
    label: String,
}

/// The chart's frame for the template: the view box, and the plot area's edges.
struct Frame {
    width: u32,
    height: u32,
    left: u32,
    right: u32,
    top: u32,
    bottom: u32,
}

const FRAME: Frame = Frame {
    width: VIEW_WIDTH,
    height: VIEW_HEIGHT,
    left: PLOT_LEFT,
    right: PLOT_LEFT + PLOT_WIDTH,
    top: PLOT_TOP,
    bottom: PLOT_BOTTOM,
};

struct Chart {
    frame: Frame,
    id: &'static str,
    description: String,
    bars: Vec<Bar>,
    grid: Vec<GridLine>,
    ticks: Vec<XTick>,
    /// The value at the top gridline.
    top: u64,
}

/// One series of bars: its CSS class, what it counts, and its value in a slot.
type Series = (&'static str, &'static str, fn(&Slot) -> u64);

/// A round scale for values up to `peak`: (top, step), the top a multiple of the step and at
/// most five gridlines above zero.
fn scale(peak: u64) -> (u64, u64) {
    let raw = peak.div_ceil(5).max(1);
    let mut magnitude = 1u64;
    while magnitude.saturating_mul(10) <= raw {
        magnitude *= 10;
    }
    let step = [1, 2, 5, 10]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10 * magnitude);
    (peak.div_ceil(step).max(1) * step, step)
}

fn chart(id: &'static str, range: Range, slots: &[Slot], series: &[Series]) -> Chart {
    let n = u32::try_from(slots.len()).unwrap_or(1).max(1);
    let slot_width = PLOT_WIDTH / n;
    let pad = slot_width / 10;
    let k = u32::try_from(series.len()).unwrap_or(1).max(1);
    let bar_width = ((slot_width - 2 * pad) / k).max(1);
    let peak = slots
        .iter()
        .flat_map(|s| series.iter().map(move |(_, _, value)| value(s)))
        .max()
        .unwrap_or(0);
    let (top, step) = scale(peak);
    let height_of = |v: u64| -> u32 {
        let h = (u128::from(v) * u128::from(PLOT_HEIGHT)).div_ceil(u128::from(top));
        // A non-zero count stays visible however tall the busiest slot is.
        u32::try_from(h)
            .unwrap_or(PLOT_HEIGHT)
            .clamp(u32::from(v > 0), PLOT_HEIGHT)
    };
    let mut bars = Vec::new();
    let mut ticks = Vec::new();
    for (i, slot) in (0u32..).zip(slots) {
        let x = PLOT_LEFT + i * slot_width;
        for (j, (class, what, value)) in (0u32..).zip(series) {
            let v = value(slot);
            let height = height_of(v);
            bars.push(Bar {
                x: x + pad + j * bar_width,
                y: PLOT_BOTTOM - height,
                width: bar_width,
                height,
                class,
                title: format!("{}: {v} {what}", slot_time(range, slot.hour)),
            });
        }
        if let Some(label) = tick_label(range, i, slot.hour) {
            ticks.push(XTick { x, label });
        }
    }
    let grid = (0..=top / step)
        .map(|g| {
            let value = g * step;
            GridLine {
                y: PLOT_BOTTOM - height_of(value),
                label: value.to_string(),
            }
        })
        .collect();
    let what: Vec<&str> = series.iter().map(|(_, what, _)| *what).collect();
    Chart {
        frame: FRAME,
        id,
        description: format!(
            "{} per {} over the {}",
            what.join(", "),
            if range.per_day() { "day" } else { "hour" },
            range.title().to_lowercase()
        ),
        bars,
        grid,
        ticks,
        top,
    }
}

fn format_hour(hour: i64, format: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    time::OffsetDateTime::from_unix_timestamp(hour.saturating_mul(3600))
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// The slot a bar stands for, for its tooltip.
fn slot_time(range: Range, hour: i64) -> String {
    if range.per_day() {
        format_hour(
            hour,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
    } else {
        format_hour(
            hour,
            time::macros::format_description!("[year]-[month]-[day] [hour]:00 UTC"),
        )
    }
}

/// Every third hour over a day, each midnight over a week, every fifth day over a month.
fn tick_label(range: Range, index: u32, hour: i64) -> Option<String> {
    match range {
        Range::Day => (hour.rem_euclid(3) == 0)
            .then(|| format_hour(hour, time::macros::format_description!("[hour]:00"))),
        Range::Week => (hour.rem_euclid(24) == 0).then(|| {
            format_hour(
                hour,
                time::macros::format_description!("[weekday repr:short] [day padding:none]"),
            )
        }),
        Range::Month => index.is_multiple_of(5).then(|| {
            format_hour(
                hour,
                time::macros::format_description!("[month repr:short] [day padding:none]"),
            )
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The page.

/// A range choice link.
struct RangeLink {
    key: &'static str,
    label: &'static str,
    current: bool,
}

/// A domain name for people: the stored name, and its Unicode form when it holds A-labels.
pub(crate) struct DomainLabel {
    pub name: String,
    pub unicode: Option<String>,
    pub href: String,
}

impl DomainLabel {
    pub(crate) fn of(domain: &DomainName) -> Self {
        Self {
            name: domain.to_string(),
            unicode: unicode_domain(domain.as_str()),
            href: segment(domain.as_str()),
        }
    }
}

/// One row of a top list: a domain, or a user of a domain, and the figure shown.
struct TopRow {
    domain: DomainLabel,
    /// The local part, for a user row.
    local: Option<(String, String)>,
    value: String,
}

fn domain_rows(list: Vec<Ranked<DomainName>>, show: fn(u64) -> String) -> Vec<TopRow> {
    list.into_iter()
        .map(|r| TopRow {
            domain: DomainLabel::of(&r.name),
            local: None,
            value: show(r.value),
        })
        .collect()
}

fn user_rows(list: Vec<Ranked<Address>>, show: fn(u64) -> String) -> Vec<TopRow> {
    list.into_iter()
        .map(|r| TopRow {
            domain: DomainLabel::of(&r.name.domain),
            local: Some((r.name.local.to_string(), segment(r.name.local.as_str()))),
            value: show(r.value),
        })
        .collect()
}

struct TopList {
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    /// Said under the list: what it was counted from, when that is not the whole range.
    note: Option<String>,
    rows: Vec<TopRow>,
}

/// How many entries each top list shows.
const TOP: u64 = 10;

#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
struct Dashboard {
    chrome: Chrome,
    domains: u64,
    users: u64,
    used: String,
    quota: String,
    /// Used share of the quota, 0..=1, when there is a finite quota.
    fill: Option<f64>,
    sessions: u64,
    range: &'static str,
    range_title: &'static str,
    per: &'static str,
    ranges: Vec<RangeLink>,
    activity: Chart,
    failures: Chart,
    delivered_total: u64,
    logins_total: u64,
    failed_total: u64,
    tops: Vec<TopList>,
    /// Accounts in scope still holding an imported password hash, by scheme.
    legacy: Vec<(String, u64)>,
    migration: MigrationCounts,
    /// Re-download alarms of the last days in scope, newest first.
    alarms: Vec<crate::pages::alarms::AlarmView>,
}

async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Query(query): Query<DashboardQuery>,
) -> Result<Dashboard, AppError> {
    let range = Range::parse(query.range.as_deref());
    let store = &state.roles.admin;
    let scope = &actor.scope;
    let this_hour = state.now().div_euclid(3_600_000);
    let empty = slots(range, this_hour, &[], &[]);
    let since_hour = empty.first().map_or(this_hour, |s| s.hour);
    let totals = store.totals(scope).await?;
    let stats = store.hourly_stats(scope, since_hour).await?;
    let failed = store.failed_logins(scope, since_hour).await?;
    let top = store
        .top_lists(scope, since_hour.saturating_mul(3_600_000), TOP)
        .await?;
    let legacy = store.legacy_schemes(scope).await?;
    let migration = store.migration_counts(scope).await?;
    let alarms = crate::provision::alarms::recent_alarms(&state.roles, &actor, state.now()).await?;
    let slots = slots(range, this_hour, &stats, &failed);
    let count = |n: u64| n.to_string();
    let tops = vec![
        TopList {
            id: "top-domains-storage",
            note: None,
            title: "Domains by storage",
            unit: "Stored",
            rows: domain_rows(top.domains_by_storage, human_bytes),
        },
        TopList {
            id: "top-domains-logins",
            note: None,
            title: "Domains by logins",
            unit: "Logins",
            rows: domain_rows(top.domains_by_logins, count),
        },
        TopList {
            id: "top-users-storage",
            note: None,
            title: "Users by storage",
            unit: "Stored",
            rows: user_rows(top.users_by_storage, human_bytes),
        },
        TopList {
            id: "top-users-logins",
            note: (top.logins_counted >= LOGIN_SAMPLE)
                .then(|| format!("From the range's last {LOGIN_SAMPLE} logins.")),
            title: "Users by logins",
            unit: "Logins",
            rows: user_rows(top.users_by_logins, count),
        },
    ];
    Ok(Dashboard {
        chrome: Chrome::from(&actor),
        domains: totals.domains,
        users: totals.users,
        used: human_bytes(totals.usage.bytes),
        quota: totals
            .quota_bytes
            .map_or_else(|| "unlimited".into(), human_bytes),
        fill: totals
            .quota_bytes
            .filter(|q| *q > 0)
            .map(|q| (totals.usage.bytes as f64 / q as f64).min(1.0)),
        sessions: totals.sessions,
        range: range.key(),
        range_title: range.title(),
        per: if range.per_day() { "day" } else { "hour" },
        ranges: Range::ALL
            .into_iter()
            .map(|r| RangeLink {
                key: r.key(),
                label: r.title(),
                current: r == range,
            })
            .collect(),
        activity: chart(
            "activity-chart",
            range,
            &slots,
            &[
                ("delivered", "messages delivered", |s| s.delivered),
                ("logins", "POP3 logins", |s| s.logins),
            ],
        ),
        failures: chart(
            "failed-chart",
            range,
            &slots,
            &[("failed", "failed logins", |s| s.failed)],
        ),
        delivered_total: slots.iter().map(|s| s.delivered).sum(),
        logins_total: slots.iter().map(|s| s.logins).sum(),
        failed_total: slots.iter().map(|s| s.failed).sum(),
        tops,
        legacy,
        migration,
        alarms: alarms.iter().map(Into::into).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_is_round_and_covers_the_peak() {
        assert_eq!(scale(0), (1, 1));
        assert_eq!(scale(3), (3, 1));
        assert_eq!(scale(7), (8, 2));
        assert_eq!(scale(48), (50, 10));
        assert_eq!(scale(1234), (1500, 500));
        for peak in [1, 9, 11, 99, 101, 999_999] {
            let (top, step) = scale(peak);
            assert!(top >= peak && top % step == 0 && top / step <= 5, "{peak}");
        }
    }

    #[test]
    fn slots_end_at_the_current_hour_or_day_and_drop_what_is_outside() {
        let now = 1_000_000; // an hour number: 1_000_000 % 24 == 16
        let stats = [
            HourlyStat {
                hour: now,
                delivered: 10,
                logins: 5,
            },
            HourlyStat {
                hour: now - 30,
                delivered: 99,
                logins: 1,
            },
        ];
        let failed = [FailedLogins {
            hour: now - 1,
            failed: 7,
        }];
        let day = slots(Range::Day, now, &stats, &failed);
        assert_eq!(day.len(), 24);
        assert_eq!(day[23].hour, now);
        assert_eq!((day[23].delivered, day[23].logins), (10, 5));
        assert_eq!(day[22].failed, 7);
        assert_eq!(day.iter().map(|s| s.delivered).sum::<u64>(), 10);
        let week = slots(Range::Week, now, &stats, &failed);
        assert_eq!(week.len(), 168);
        assert_eq!(week.iter().map(|s| s.delivered).sum::<u64>(), 109);
        let month = slots(Range::Month, now, &stats, &failed);
        assert_eq!(month.len(), 30);
        assert_eq!(
            month[29].hour,
            now - 16,
            "the last slot is today from midnight"
        );
        assert_eq!(
            (month[29].delivered, month[29].failed, month[28].delivered),
            (10, 7, 99)
        );
    }

    #[test]
    fn bars_scale_to_the_top_gridline_and_ticks_fall_on_boundaries() {
        let now = 1_000_000;
        let stats = [HourlyStat {
            hour: now,
            delivered: 10,
            logins: 5,
        }];
        let s = slots(Range::Day, now, &stats, &[]);
        let c = chart("c", Range::Day, &s, &[("delivered", "d", |s| s.delivered)]);
        assert_eq!(c.top, 10);
        let last = c.bars.last().expect("bars");
        assert_eq!((last.y, last.height), (PLOT_TOP, PLOT_HEIGHT));
        assert!(c.bars[..23].iter().all(|b| b.height == 0));
        assert!(
            c.bars
                .iter()
                .all(|b| b.x + b.width <= PLOT_LEFT + PLOT_WIDTH)
        );
        // 0, 2, …, 10: gridlines from the axis to the top.
        assert_eq!(c.grid.len(), 6);
        assert_eq!((c.grid[0].y, c.grid[5].y), (PLOT_BOTTOM, PLOT_TOP));
        assert_eq!(c.ticks.len(), 8);
        assert!(c.ticks.iter().all(|t| t.label.ends_with(":00")));
        let week = slots(Range::Week, now, &stats, &[]);
        assert_eq!(chart("w", Range::Week, &week, &[]).ticks.len(), 7);
        let month = slots(Range::Month, now, &stats, &[]);
        assert_eq!(chart("m", Range::Month, &month, &[]).ticks.len(), 6);
    }

    #[test]
    fn an_unknown_range_shows_the_default() {
        assert_eq!(Range::parse(Some("7d")), Range::Week);
        assert_eq!(Range::parse(Some("30d")), Range::Month);
        assert_eq!(Range::parse(Some("1y")), Range::Day);
        assert_eq!(Range::parse(None), Range::Day);
    }
}

//! The dashboard: totals in the admin's scope and a chart of the last day's deliveries and
//! POP3 logins per hour, drawn as SVG on the server (no script).

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use mailstore::HourlyStat;

use crate::auth::Chrome;
use crate::error::AppError;
use crate::pages::human_bytes;
use crate::provision::Actor;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(show))
}

/// One bar of the chart, in SVG user units.
struct Bar {
    x: u32,
    y: u32,
    height: u32,
    class: &'static str,
    title: String,
}

/// An hour label under the chart.
struct Tick {
    x: u32,
    label: String,
}

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
    bars: Vec<Bar>,
    ticks: Vec<Tick>,
    delivered_total: u64,
    logins_total: u64,
    peak: u64,
    /// Accounts in scope still holding an imported password hash, by scheme.
    legacy: Vec<(String, u64)>,
}

const HOURS: i64 = 24;
const CHART_HEIGHT: u32 = 160;
const SLOT: u32 = 30;
const BAR: u32 = 12;

async fn show(State(state): State<AppState>, actor: Actor) -> Result<Dashboard, AppError> {
    let totals = state.roles.admin.totals(&actor.scope).await?;
    let this_hour = state.now().div_euclid(3_600_000);
    let stats = state
        .roles
        .admin
        .hourly_stats(&actor.scope, this_hour - (HOURS - 1))
        .await?;
    let (bars, ticks, peak) = chart(&stats, this_hour);
    let legacy = state.roles.admin.legacy_schemes(&actor.scope).await?;
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
        delivered_total: stats.iter().map(|s| s.delivered).sum(),
        logins_total: stats.iter().map(|s| s.logins).sum(),
        bars,
        ticks,
        peak,
        legacy,
    })
}

/// Two bars per hour (deliveries, logins), scaled to the busiest hour; the last hour on the right.
fn chart(stats: &[HourlyStat], this_hour: i64) -> (Vec<Bar>, Vec<Tick>, u64) {
    let first = this_hour - (HOURS - 1);
    let peak = stats
        .iter()
        .filter(|s| (first..=this_hour).contains(&s.hour))
        .flat_map(|s| [s.delivered, s.logins])
        .max()
        .unwrap_or(0)
        .max(1);
    let mut bars = Vec::new();
    let mut ticks = Vec::new();
    for slot in 0..HOURS {
        let hour = first + slot;
        let stat = stats
            .iter()
            .find(|s| s.hour == hour)
            .copied()
            .unwrap_or_default();
        let x = u32::try_from(slot).unwrap_or(0) * SLOT + 4;
        for (offset, value, class, what) in [
            (0, stat.delivered, "delivered", "delivered"),
            (BAR, stat.logins, "logins", "logins"),
        ] {
            let height = u32::try_from(value * u64::from(CHART_HEIGHT) / peak).unwrap_or(0);
            bars.push(Bar {
                x: x + offset,
                y: CHART_HEIGHT - height,
                height,
                class,
                title: format!("{:02}:00 UTC: {value} {what}", hour.rem_euclid(24)),
            });
        }
        if slot % 3 == 0 {
            ticks.push(Tick {
                x,
                label: format!("{:02}h", hour.rem_euclid(24)),
            });
        }
    }
    (bars, ticks, peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_hour_and_the_last_hour_is_rightmost() {
        let now = 1_000_000;
        let stats = [
            HourlyStat {
                hour: now,
                delivered: 10,
                logins: 5,
            },
            HourlyStat {
                hour: now - 30,
                delivered: 99,
                logins: 0,
            },
        ];
        let (bars, ticks, peak) = chart(&stats, now);
        assert_eq!(peak, 10, "hours outside the window do not count");
        assert_eq!(bars.len(), 48);
        let last_delivered = &bars[46];
        assert_eq!((last_delivered.height, last_delivered.y), (CHART_HEIGHT, 0));
        assert_eq!(bars[47].height, CHART_HEIGHT / 2);
        assert!(bars[..46].iter().all(|b| b.height == 0));
        assert_eq!(ticks.len(), 8);
    }
}

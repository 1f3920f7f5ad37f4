//! Refused attempts leave a trace. A domain admin naming a domain outside their scope (answered
//! 404, the same as a domain that does not exist) and any 403 are security events: a `warn` line
//! naming the actor, client address, method and path, and a count in
//! `pophost_admin_refused_total{kind="cross_tenant"|"forbidden"}`. The lines are rate-limited by
//! one token bucket per process, so a flood of refused requests cannot fill the log; the counter
//! counts every one.
//!
//! The scope check (`Actor::domain`) runs deep inside the provisioning service, which knows the
//! actor but not the request; `watch`, around every route, knows the request and the answer. The
//! check notes its refusal in a task-local slot `watch` opened for the request, and `watch`
//! reports it if the answer was the 404 it causes (a handler that tolerated the miss reports
//! nothing).

use std::cell::RefCell;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::client_ip;
use crate::provision::Actor;
use crate::state::AppState;

pub const REFUSED_COUNTER: &str = "pophost_admin_refused_total";

/// Log lines allowed in a burst, and the rate they come back at.
const BURST: f64 = 20.0;
const PER_SECOND: f64 = 1.0;

/// Who was refused, as the scope check saw them.
#[derive(Debug, Clone)]
struct Noted {
    actor: String,
    cross_tenant: bool,
}

tokio::task_local! {
    static NOTED: RefCell<Option<Noted>>;
}

/// Called by the scope check when `actor` names a domain outside their scope.
pub(crate) fn note_cross_tenant(actor: &Actor) {
    note(actor, true);
}

/// Called where a role check refuses `actor` (a domain admin on a super-admin action).
pub(crate) fn note_forbidden(actor: &Actor) {
    note(actor, false);
}

fn note(actor: &Actor, cross_tenant: bool) {
    // Outside a request (the command line, unit tests) there is nothing to report to.
    let _ = NOTED.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        let cross_tenant = cross_tenant || slot.as_ref().is_some_and(|n| n.cross_tenant);
        *slot = Some(Noted {
            actor: actor.name.clone(),
            cross_tenant,
        });
    });
}

/// Middleware around every route: reports the request's refusal, if it had one.
pub async fn watch(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let ip = client_ip(&state, req.headers(), req.extensions());
    let (noted, res) = NOTED
        .scope(RefCell::new(None), async move {
            let res = next.run(req).await;
            (NOTED.with(|slot| slot.borrow_mut().take()), res)
        })
        .await;
    let kind = match res.status() {
        StatusCode::NOT_FOUND if noted.as_ref().is_some_and(|n| n.cross_tenant) => "cross_tenant",
        StatusCode::FORBIDDEN => "forbidden",
        _ => return res,
    };
    metrics::counter!(REFUSED_COUNTER, "kind" => kind).increment(1);
    if let Some(suppressed) = BUCKET.take(Instant::now()) {
        let actor = noted.as_ref().map_or("-", |n| n.actor.as_str());
        let ip = ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        tracing::warn!(
            target: "pophost::security",
            kind,
            actor,
            ip,
            %method,
            path,
            suppressed,
            "admin request refused"
        );
    }
    res
}

static BUCKET: Bucket = Bucket::new(BURST, PER_SECOND);

/// A token bucket for log lines: `take` says whether a line may be written now, and how many
/// were held back since the last one.
struct Bucket {
    state: Mutex<BucketState>,
    burst: f64,
    per_second: f64,
}

struct BucketState {
    tokens: f64,
    last: Option<Instant>,
    suppressed: u64,
}

impl Bucket {
    const fn new(burst: f64, per_second: f64) -> Self {
        Self {
            state: Mutex::new(BucketState {
                tokens: burst,
                last: None,
                suppressed: 0,
            }),
            burst,
            per_second,
        }
    }

    /// `Some(lines held back before this one)` when a line may be written at `now`.
    fn take(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = s.last {
            let gained = now.saturating_duration_since(last).as_secs_f64() * self.per_second;
            s.tokens = (s.tokens + gained).min(self.burst);
        }
        s.last = Some(now);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_one_line_per_interval_and_counts_the_rest() {
        let bucket = Bucket::new(3.0, 1.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), Some(0));
        }
        assert_eq!(bucket.take(t0), None);
        assert_eq!(bucket.take(t0 + Duration::from_millis(500)), None);
        // A second after the burst: one more line, saying two were held back.
        assert_eq!(bucket.take(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(bucket.take(t0 + Duration::from_secs(1)), None);
        // A long quiet spell refills the bucket to the burst, no more.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(bucket.take(later).is_some());
        }
        assert_eq!(bucket.take(later), None);
    }
}

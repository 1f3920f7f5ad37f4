//! Protocol traces of one user (issue 21, item 5): start one for 1 to 60 minutes, stop it, read
//! it, download it; for the user page, the API and `pophost user trace`. Scope-checked like the
//! user it belongs to; starting, stopping and downloading are audited (`user.trace.start`,
//! `user.trace.stop`, `user.trace.download`): a trace shows what a customer's client did.

use mailstore::{Address, MAX_TRACE_MINUTES, StoreError, TraceInfo, TraceLine};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{Actor, Audit, Error, Roles};

/// Starts (or restarts, replacing the old one) a trace of `address` for `minutes`.
pub async fn start(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    minutes: u32,
    now: i64,
) -> Result<TraceInfo, Error> {
    actor.reach(&address.domain)?;
    if !(1..=MAX_TRACE_MINUTES).contains(&minutes) {
        return Err(Error::Invalid(format!(
            "a trace runs 1 to {MAX_TRACE_MINUTES} minutes"
        )));
    }
    let info = roles
        .traces
        .start_trace(address, &actor.name, minutes, now)
        .await
        .map_err(|e| not_found(e, address))?;
    let object = address.to_string();
    actor
        .audit(
            roles,
            Audit::new("user.trace.start", &object, Some(&address.domain))
                .after(json!({ "minutes": minutes, "until": info.until })),
        )
        .await;
    Ok(info)
}

/// Stops recording `address`'s trace; `false` when none was recording. The trace stays
/// readable until it expires.
pub async fn stop(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    now: i64,
) -> Result<bool, Error> {
    super::user(roles, actor, address).await?;
    let stopped = roles.traces.stop_trace(address, now).await?;
    if stopped {
        let object = address.to_string();
        actor
            .audit(
                roles,
                Audit::new("user.trace.stop", &object, Some(&address.domain)),
            )
            .await;
    }
    Ok(stopped)
}

/// `address`'s unexpired trace, if any; `NotFound` for no such user in scope.
pub async fn get(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    now: i64,
) -> Result<Option<(TraceInfo, Vec<TraceLine>)>, Error> {
    super::user(roles, actor, address).await?;
    Ok(roles.traces.user_trace(address, now).await?)
}

/// The trace as a text file (`NotFound` when there is none), audited as a download.
pub async fn download(
    roles: &Roles,
    actor: &Actor,
    address: &Address,
    now: i64,
) -> Result<String, Error> {
    let (info, lines) = get(roles, actor, address, now)
        .await?
        .ok_or_else(|| Error::NotFound(format!("trace of {address}")))?;
    let object = address.to_string();
    actor
        .audit(
            roles,
            Audit::new("user.trace.download", &object, Some(&address.domain)),
        )
        .await;
    Ok(as_text(address, &info, &lines))
}

/// One line per recorded line: time (UTC, milliseconds), session, `C`/`S`, text.
pub fn as_text(address: &Address, info: &TraceInfo, lines: &[TraceLine]) -> String {
    let mut out = format!(
        "# POP3 trace of {address}, started by {} at {}, until {}{}\n",
        info.started_by,
        iso(info.started_at),
        iso(info.until),
        info.stopped_at
            .map(|s| format!(", stopped at {}", iso(s)))
            .unwrap_or_default(),
    );
    if info.dropped > 0 {
        out.push_str(&format!(
            "# {} lines were not recorded (a frontend's trace queue was full)\n",
            info.dropped
        ));
    }
    for l in lines {
        out.push_str(&format!(
            "{} {} {} {}\n",
            iso(l.at),
            l.session,
            l.direction.as_str(),
            l.text
        ));
    }
    out
}

fn iso(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn not_found(e: StoreError, address: &Address) -> Error {
    match e {
        StoreError::NotFound(_) => Error::NotFound(format!("user {address}")),
        e => Error::Store(e),
    }
}

/// `POST .../trace`: how long to record.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    /// 1 to 60.
    pub minutes: u32,
}

/// One recorded line.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TraceLine)]
pub struct TraceLineJson {
    /// Unix milliseconds.
    pub at: i64,
    /// The connection (frontend process and connection number).
    pub session: String,
    /// `C` (client) or `S` (server).
    pub direction: String,
    pub text: String,
}

/// A user's protocol trace.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Trace)]
pub struct TraceJson {
    pub address: String,
    pub started_by: String,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Recording ends, and the trace is deleted, at this time (Unix milliseconds).
    pub until: i64,
    #[schema(required = true)]
    pub stopped_at: Option<i64>,
    /// Whether sessions are being recorded now.
    pub recording: bool,
    /// Lines a frontend could not record.
    pub dropped: u64,
    pub lines: Vec<TraceLineJson>,
}

impl TraceJson {
    pub fn new(address: &Address, info: &TraceInfo, lines: &[TraceLine], now: i64) -> Self {
        Self {
            address: address.to_string(),
            started_by: info.started_by.clone(),
            started_at: info.started_at,
            until: info.until,
            stopped_at: info.stopped_at,
            recording: info.recording(now),
            dropped: info.dropped,
            lines: lines
                .iter()
                .map(|l| TraceLineJson {
                    at: l.at,
                    session: l.session.clone(),
                    direction: l.direction.as_str().into(),
                    text: l.text.clone(),
                })
                .collect(),
        }
    }
}

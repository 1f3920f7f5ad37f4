//! Protocol traces (issue 21, item 5): an admin records one user's POP3 commands and the first
//! line of each reply for up to `MAX_TRACE_MINUTES`. The trace lives in the store, so every
//! frontend records into the same one: frontends read the active traces periodically
//! (`Traces::active_traces`, one cheap query) and append lines in batches. A trace records
//! until its `until` (or until stopped) and is deleted with its lines once `until` has passed
//! (`Traces::delete_expired_traces`); until then a stopped trace stays readable.
//!
//! What goes into a line is the frontend's business: it never hands the store a password,
//! a SASL response or a message body.

use async_trait::async_trait;

use crate::{Address, Result, UserId};

/// The longest a trace may run.
pub const MAX_TRACE_MINUTES: u32 = 60;

/// Most lines `Traces::user_trace` returns: a client looping for an hour must not make the
/// page unreadable or the download unbounded.
pub const MAX_TRACE_LINES: u64 = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub i64);

/// Who sent a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Client,
    Server,
}

impl Direction {
    /// `C` or `S`, as stored and as the download shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Client => "C",
            Direction::Server => "S",
        }
    }

    pub fn parse(s: &str) -> Self {
        if s == "C" {
            Direction::Client
        } else {
            Direction::Server
        }
    }
}

/// A user's trace. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceInfo {
    pub id: TraceId,
    pub user: UserId,
    /// The admin (e-mail, or `cli`) who started it.
    pub started_by: String,
    pub started_at: i64,
    /// Recording ends here, and the trace with its lines is deleted after it.
    pub until: i64,
    pub stopped_at: Option<i64>,
    /// Lines frontends could not record (their queue was full).
    pub dropped: u64,
}

impl TraceInfo {
    /// Whether sessions are recorded at `now`.
    pub fn recording(&self, now: i64) -> bool {
        self.stopped_at.is_none() && now < self.until
    }
}

/// A trace being recorded, as frontends learn it: the user's id and canonical address
/// (`local@domain`, lower case), so a session can match the name `USER` gives before login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveTrace {
    pub trace: TraceId,
    pub user: UserId,
    pub address: String,
}

/// One recorded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// The connection it came from (unique per frontend process and connection).
    pub session: String,
    pub at: i64,
    pub direction: Direction,
    pub text: String,
}

/// A line to append to a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTraceLine {
    pub trace: TraceId,
    pub line: TraceLine,
}

#[async_trait]
pub trait Traces: Send + Sync {
    /// Starts a trace of `address` recording from `now` for `minutes` (1..=60, else `Invalid`);
    /// a trace the user already had is replaced, lines and all. `NotFound` for no such user.
    async fn start_trace(
        &self,
        address: &Address,
        started_by: &str,
        minutes: u32,
        now: i64,
    ) -> Result<TraceInfo>;
    /// Stops recording; the trace stays readable until it expires. `false` when the user had
    /// no trace recording.
    async fn stop_trace(&self, address: &Address, now: i64) -> Result<bool>;
    /// Every trace recording at `now`: what frontends poll.
    async fn active_traces(&self, now: i64) -> Result<Vec<ActiveTrace>>;
    /// Appends lines, and adds to traces' dropped-line counts, in one transaction. Lines of a
    /// trace that is gone (deleted, replaced) are ignored.
    async fn append_trace_lines(
        &self,
        lines: &[NewTraceLine],
        dropped: &[(TraceId, u64)],
    ) -> Result<()>;
    /// The user's unexpired trace with its first `MAX_TRACE_LINES` lines in order; `None`
    /// when there is none (or no such user).
    async fn user_trace(
        &self,
        address: &Address,
        now: i64,
    ) -> Result<Option<(TraceInfo, Vec<TraceLine>)>>;
    /// Deletes traces whose `until` is at or before `now`, with their lines; how many traces.
    async fn delete_expired_traces(&self, now: i64) -> Result<u64>;
}

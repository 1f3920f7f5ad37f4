//! Protocol traces (issue 21, item 5): for a user an admin is tracing, every command line and
//! the first line of every reply of their sessions go into the store (`mailstore::Traces`).
//!
//! Costs for everyone else stay near zero: this process learns the set of traced users by one
//! query every `REFRESH` (`Tracer::run`), never per login. A session buffers its few lines
//! before login (at most `PRE_LOGIN_LINES`), and once a login names a traced user (`USER`,
//! `APOP`, or the user a login reached) hands them and everything after to a bounded queue;
//! otherwise it drops them at login and records nothing more. A writer task stores the queue in
//! batches; when the queue is full lines are dropped and counted on the trace, so a session
//! never waits for the store.
//!
//! What is never recorded: the argument of `PASS`, `AUTH` initial responses and SASL response
//! lines, the `APOP` digest, server challenges, message bodies and listings (replies give their
//! first line only).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailstore::{Direction, NewTraceLine, TraceId, TraceLine, Traces, UserId};
use pop3_proto::Reply;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the set of traced users is read from the store: how soon a trace started on any
/// frontend reaches this one.
const REFRESH: Duration = Duration::from_secs(2);
/// Every this many refreshes, expired traces are deleted (here, 10 s): a trace is gone from
/// the store within seconds of its end. Safe from several frontends at once.
const PURGE_EVERY: u32 = 5;
/// Lines waiting for the writer; past this they are dropped (and counted).
const QUEUE: usize = 4096;
/// Lines per store write.
const BATCH: usize = 512;
/// Lines a session keeps before it knows whether it is traced.
const PRE_LOGIN_LINES: usize = 32;
/// Longest text kept of one line.
const MAX_TEXT: usize = 512;

/// Who is traced, as of the last refresh.
#[derive(Default)]
struct Active {
    by_user: HashMap<UserId, TraceId>,
    /// By canonical address (`local@domain`, lower case).
    by_name: HashMap<String, TraceId>,
}

/// This process's side of tracing, shared by its sessions.
pub struct Tracer {
    active: RwLock<Arc<Active>>,
    /// Whether anyone is traced: while nobody is, sessions keep no lines at all (the common
    /// case costs one atomic load per line).
    anyone: AtomicBool,
    queue: mpsc::Sender<NewTraceLine>,
    /// Lines dropped per trace since the writer last stored the counts.
    dropped: Mutex<HashMap<TraceId, u64>>,
    /// Tells this process's sessions from other frontends' in a trace.
    process: String,
}

impl Tracer {
    /// The tracer, and the task that keeps it current and writes its lines until `stop`; after
    /// `stop` the task stores what is still queued, then ends.
    pub fn start(
        store: Arc<dyn Traces>,
        stop: CancellationToken,
    ) -> (Arc<Tracer>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let tracer = Arc::new(Tracer {
            active: RwLock::default(),
            anyone: AtomicBool::new(false),
            queue: tx,
            dropped: Mutex::default(),
            process: format!("{:x}", std::process::id()),
        });
        let task = tokio::spawn(run(tracer.clone(), store, rx, stop));
        (tracer, task)
    }

    fn active(&self) -> Arc<Active> {
        self.active.read().map(|a| a.clone()).unwrap_or_default()
    }

    fn is_active(&self, trace: TraceId) -> bool {
        self.active().by_user.values().any(|&t| t == trace)
    }

    /// Queues a line, or counts it as dropped: never waits.
    fn send(&self, trace: TraceId, line: TraceLine) {
        if let Err(e) = self.queue.try_send(NewTraceLine { trace, line }) {
            let trace = match e {
                mpsc::error::TrySendError::Full(l) | mpsc::error::TrySendError::Closed(l) => {
                    l.trace
                }
            };
            if let Ok(mut dropped) = self.dropped.lock() {
                *dropped.entry(trace).or_default() += 1;
            }
        }
    }

    fn take_dropped(&self) -> Vec<(TraceId, u64)> {
        self.dropped
            .lock()
            .map(|mut d| d.drain().collect())
            .unwrap_or_default()
    }
}

/// Refreshes the traced set, purges expired traces and writes queued lines, until `stop`.
async fn run(
    tracer: Arc<Tracer>,
    store: Arc<dyn Traces>,
    mut rx: mpsc::Receiver<NewTraceLine>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u32 = 0;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                refresh(&tracer, &*store).await;
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(PURGE_EVERY) {
                    match store.delete_expired_traces(now_ms()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(traces = n, "expired protocol traces deleted"),
                        Err(e) => tracing::warn!(error = %e, "deleting expired traces failed"),
                    }
                }
                // Drops are stored even when no line follows them.
                write(&tracer, &*store, &mut batch).await;
            }
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                write(&tracer, &*store, &mut batch).await;
            }
        }
    }
    // Sessions are over: what they queued is stored before the server exits.
    while let Ok(line) = rx.try_recv() {
        batch.push(line);
        if batch.len() >= BATCH {
            write(&tracer, &*store, &mut batch).await;
        }
    }
    write(&tracer, &*store, &mut batch).await;
}

async fn refresh(tracer: &Tracer, store: &dyn Traces) {
    match store.active_traces(now_ms()).await {
        Ok(traces) => {
            let mut active = Active::default();
            for t in traces {
                active.by_user.insert(t.user, t.trace);
                active.by_name.insert(t.address, t.trace);
            }
            let anyone = !active.by_user.is_empty();
            if let Ok(mut a) = tracer.active.write() {
                *a = Arc::new(active);
            }
            tracer.anyone.store(anyone, Ordering::Relaxed);
        }
        // The old set stays: a store hiccup neither starts nor stops traces.
        Err(e) => tracing::warn!(error = %e, "reading active protocol traces failed"),
    }
}

async fn write(tracer: &Tracer, store: &dyn Traces, batch: &mut Vec<NewTraceLine>) {
    let dropped = tracer.take_dropped();
    if batch.is_empty() && dropped.is_empty() {
        return;
    }
    if let Err(e) = store.append_trace_lines(batch, &dropped).await {
        tracing::warn!(error = %e, lines = batch.len(), "writing protocol trace lines failed");
        // Counted as dropped, so the trace says it is incomplete.
        if let Ok(mut d) = tracer.dropped.lock() {
            for line in batch.iter() {
                *d.entry(line.trace).or_default() += 1;
            }
            for (trace, n) in dropped {
                *d.entry(trace).or_default() += n;
            }
        }
    }
    batch.clear();
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One session's trace state.
#[derive(Default)]
pub(crate) struct SessionTrace {
    tracer: Option<Arc<Tracer>>,
    /// `process.connection`, the connection number matching the session's log span.
    session: String,
    state: Recording,
}

#[derive(Default)]
enum Recording {
    /// Before login: the lines so far, kept until it is known whether the session is traced.
    Pending(Vec<(i64, Direction, String)>),
    Traced(TraceId),
    /// Logged in as an untraced user, or no tracer: nothing more is recorded.
    #[default]
    Off,
}

impl SessionTrace {
    pub(crate) fn new(tracer: Arc<Tracer>, connection: u64) -> Self {
        Self {
            session: format!("{}.{connection}", tracer.process),
            tracer: Some(tracer),
            state: Recording::Pending(Vec::new()),
        }
    }

    /// A line the client sent; `sasl` when it answers an `AUTH` challenge.
    pub(crate) fn client(&mut self, line: &[u8], sasl: bool) {
        if !self.recording() {
            return;
        }
        let text = if sasl {
            "<SASL response redacted>".to_owned()
        } else {
            redact_command(line)
        };
        self.record(Direction::Client, text);
    }

    /// A line the client sent that was too long to read.
    pub(crate) fn client_too_long(&mut self) {
        if self.recording() {
            self.record(Direction::Client, "<line too long>".to_owned());
        }
    }

    /// A reply, `encoded` as queued: its first line only.
    pub(crate) fn server(&mut self, reply: &Reply, encoded: &[u8]) {
        if !self.recording() {
            return;
        }
        let text = match reply {
            // SCRAM's challenges carry the salt and the server's proof: not the help desk's.
            Reply::Challenge(_) => "+ <SASL challenge redacted>".to_owned(),
            _ => {
                let end = encoded
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .unwrap_or(encoded.len());
                clean(&encoded[..end])
            }
        };
        self.record(Direction::Server, text);
    }

    /// Whether a line now would be kept: always in a traced session, before login only while
    /// someone is traced.
    fn recording(&self) -> bool {
        match (&self.state, &self.tracer) {
            (Recording::Traced(_), _) => true,
            (Recording::Pending(_), Some(tracer)) => tracer.anyone.load(Ordering::Relaxed),
            _ => false,
        }
    }

    /// A login named `name` (`USER`, `APOP`): traced from here on if that user is.
    pub(crate) fn named(&mut self, name: &str) {
        if let (Recording::Pending(_), Some(tracer)) = (&self.state, &self.tracer)
            && let Some(&trace) = tracer.active().by_name.get(&name.to_lowercase())
        {
            self.begin(trace);
        }
    }

    /// A login reached `user`: traced if they are, else nothing more is recorded.
    pub(crate) fn logged_in(&mut self, user: UserId) {
        let Some(tracer) = &self.tracer else {
            return;
        };
        match tracer.active().by_user.get(&user) {
            Some(&trace) => match self.state {
                Recording::Traced(current) if current == trace => {}
                _ => self.begin(trace),
            },
            None if matches!(self.state, Recording::Pending(_)) => self.state = Recording::Off,
            // Traced by a name the login did not reach after all (another user's password):
            // still that name's trace.
            None => {}
        }
    }

    fn begin(&mut self, trace: TraceId) {
        let Some(tracer) = &self.tracer else {
            return;
        };
        if let Recording::Pending(lines) = std::mem::replace(&mut self.state, Recording::Off) {
            for (at, direction, text) in lines {
                tracer.send(trace, self.line(at, direction, text));
            }
        }
        self.state = Recording::Traced(trace);
    }

    fn record(&mut self, direction: Direction, text: String) {
        let at = now_ms();
        match &mut self.state {
            Recording::Pending(lines) => {
                if lines.len() < PRE_LOGIN_LINES {
                    lines.push((at, direction, text));
                }
            }
            Recording::Traced(trace) => {
                let trace = *trace;
                let Some(tracer) = &self.tracer else {
                    return;
                };
                // A trace stopped or expired records no more, even in a session under way.
                if !tracer.is_active(trace) {
                    self.state = Recording::Off;
                    return;
                }
                tracer.send(trace, self.line(at, direction, text));
            }
            Recording::Off => {}
        }
    }

    fn line(&self, at: i64, direction: Direction, text: String) -> TraceLine {
        TraceLine {
            session: self.session.clone(),
            at,
            direction,
            text,
        }
    }
}

/// A command line as the trace shows it: secrets replaced by `<redacted>`.
fn redact_command(line: &[u8]) -> String {
    let text = clean(line);
    let trimmed = text.trim_start();
    let mut words = trimmed.split_ascii_whitespace();
    let verb = words.next().unwrap_or_default();
    match verb.to_ascii_uppercase().as_str() {
        "PASS" => "PASS <redacted>".to_owned(),
        "AUTH" => match (words.next(), words.next()) {
            (Some(mechanism), Some(_)) => format!("AUTH {mechanism} <redacted>"),
            _ => text,
        },
        "APOP" => match words.next() {
            Some(name) => format!("APOP {name} <redacted>"),
            None => text,
        },
        _ => text,
    }
}

/// Printable text, at most `MAX_TEXT` characters: control characters (NUL included) become `?`.
fn clean(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r\n").unwrap_or(bytes);
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOHN: UserId = UserId(7);
    const TRACE: TraceId = TraceId(70);

    /// A tracer tracing john, with a queue of `capacity` lines and no store behind it.
    fn tracer(capacity: usize) -> (Arc<Tracer>, mpsc::Receiver<NewTraceLine>) {
        let (tx, rx) = mpsc::channel(capacity);
        let mut active = Active::default();
        active.by_user.insert(JOHN, TRACE);
        active.by_name.insert("john@example.com".into(), TRACE);
        let tracer = Tracer {
            active: RwLock::new(Arc::new(active)),
            anyone: AtomicBool::new(true),
            queue: tx,
            dropped: Mutex::default(),
            process: "p".into(),
        };
        (Arc::new(tracer), rx)
    }

    fn texts(rx: &mut mpsc::Receiver<NewTraceLine>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = rx.try_recv() {
            assert_eq!(l.trace, TRACE);
            assert_eq!(l.line.session, "p.3");
            out.push(format!("{} {}", l.line.direction.as_str(), l.line.text));
        }
        out
    }

    fn greet_and_log_in(t: &mut SessionTrace, user: &str) {
        t.server(&Reply::Ok("hi".into()), b"+OK hi\r\n");
        t.client(format!("USER {user}").as_bytes(), false);
        t.named(user);
        t.client(b"PASS s3cret", false);
    }

    #[test]
    fn while_nobody_is_traced_no_line_is_kept() {
        let (tracer, mut rx) = tracer(16);
        *tracer.active.write().expect("lock") = Arc::new(Active::default());
        tracer.anyone.store(false, Ordering::Relaxed);
        let mut t = SessionTrace::new(tracer, 3);
        greet_and_log_in(&mut t, "john@example.com");
        assert!(matches!(&t.state, Recording::Pending(lines) if lines.is_empty()));
        t.logged_in(JOHN);
        assert!(matches!(t.state, Recording::Off));
        assert!(texts(&mut rx).is_empty());
    }

    #[test]
    fn a_traced_login_sends_the_lines_before_it() {
        let (tracer, mut rx) = tracer(16);
        let mut t = SessionTrace::new(tracer, 3);
        // Named by another form: known at the login.
        greet_and_log_in(&mut t, "john+example.com");
        assert!(
            texts(&mut rx).is_empty(),
            "nothing before the login says whose session"
        );
        t.logged_in(JOHN);
        t.server(&Reply::Ok("1 messages".into()), b"+OK 1 messages\r\n");
        t.client(b"AUTH PLAIN", false);
        t.server(&Reply::Challenge(b"salt".to_vec()), b"+ c2FsdA==\r\n");
        t.client(b"AGpvaG4AczNjcmV0", true);
        let multi = Reply::Multi {
            first: "follows".into(),
            lines: vec!["secret body".into()],
        };
        t.server(&multi, b"+OK follows\r\nsecret body\r\n.\r\n");
        assert_eq!(
            texts(&mut rx),
            [
                "S +OK hi",
                "C USER john+example.com",
                "C PASS <redacted>",
                "S +OK 1 messages",
                "C AUTH PLAIN",
                "S + <SASL challenge redacted>",
                "C <SASL response redacted>",
                "S +OK follows",
            ]
        );
    }

    #[test]
    fn a_session_naming_a_traced_user_is_traced_from_user_on() {
        let (tracer, mut rx) = tracer(16);
        let mut t = SessionTrace::new(tracer, 3);
        greet_and_log_in(&mut t, "JOHN@example.com");
        // The wrong password: still john's attempt.
        t.server(&Reply::Err(None, "invalid".into()), b"-ERR invalid\r\n");
        assert_eq!(
            texts(&mut rx),
            [
                "S +OK hi",
                "C USER JOHN@example.com",
                "C PASS <redacted>",
                "S -ERR invalid"
            ]
        );
    }

    #[test]
    fn untraced_sessions_record_nothing() {
        let (tracer, mut rx) = tracer(16);
        let mut t = SessionTrace::new(tracer, 3);
        greet_and_log_in(&mut t, "mary@example.com");
        t.logged_in(UserId(8));
        t.client(b"RETR 1", false);
        assert!(texts(&mut rx).is_empty());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tracer, mut rx) = tracer(2);
        let mut t = SessionTrace::new(tracer.clone(), 3);
        greet_and_log_in(&mut t, "john@example.com");
        t.client(b"STAT", false);
        assert_eq!(texts(&mut rx).len(), 2);
        assert_eq!(tracer.take_dropped(), [(TRACE, 2)]);
    }

    #[test]
    fn a_stopped_trace_records_no_more() {
        let (tracer, mut rx) = tracer(16);
        let mut t = SessionTrace::new(tracer.clone(), 3);
        greet_and_log_in(&mut t, "john@example.com");
        assert_eq!(texts(&mut rx).len(), 3);
        *tracer.active.write().expect("lock") = Arc::new(Active::default());
        t.client(b"STAT", false);
        assert!(texts(&mut rx).is_empty());
    }

    #[test]
    fn secrets_are_redacted() {
        let cases: &[(&[u8], &str)] = &[
            (b"PASS s3cret word", "PASS <redacted>"),
            (b"pass s3cret", "PASS <redacted>"),
            (b"PASS", "PASS <redacted>"),
            (b"AUTH PLAIN AGpvaG4AczNjcmV0", "AUTH PLAIN <redacted>"),
            (b"AUTH PLAIN", "AUTH PLAIN"),
            (
                b"APOP john c4c9334bac560ecc979e58001b3e22fb",
                "APOP john <redacted>",
            ),
            (b"USER john@example.com", "USER john@example.com"),
            (b"RETR 1\x00\x07", "RETR 1??"),
        ];
        for (line, want) in cases {
            assert_eq!(
                redact_command(line),
                *want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

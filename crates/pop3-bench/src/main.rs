//! `pop3-bench`: a load generator for any POP3/LMTP server, pophost or another (Dovecot), used by
//! `bench/run.py` and described in `docs/BENCHMARKS.md`. Each subcommand is one scenario and prints
//! one JSON object on standard output (a human summary goes to standard error):
//!
//! - `sessions`: N clients each looping connect, USER/PASS, STAT, UIDL, RETR of every message,
//!   (optionally DELE) QUIT, for a time or a number of sessions: sessions/s and session latency
//!   p50/p99;
//! - `retr`: RETR of one (large) message: MB/s, and the peak growth of the server's memory;
//! - `idle`: N connections left idle at the greeting or after login: server memory per connection;
//! - `lmtp`: concurrent LMTP deliverers: messages/s and p50/p99 per acknowledged message;
//! - `bigbox`: login + STAT + UIDL on one (big) mailbox: the time it takes;
//! - `poll`: what a leave-on-server client does, over many mailboxes: connect, USER/PASS, STAT,
//!   UIDL, QUIT (nothing retrieved), closed-loop (N clients) or open-loop (`--rate`): polls/s and
//!   latency p50/p99.
//!
//! `sessions` and `poll` run over implicit TLS with `--tls --ca FILE` (TLS 1.3, one shared rustls
//! client config), with ticket resumption by `--resume`; their result then says which fraction
//! of the handshakes resumed (`resumed_frac`).
//!
//! Server memory is the summed PSS of the server process and its descendants (`--server-pid`).
//! Every result carries `loader_cpu`: the loader's own CPU seconds per wall second, so a run can
//! show the loader was not the bottleneck. By default the loader runs on one thread (it cannot
//! take more than one core).

mod client;
mod mem;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;

use client::{Lmtp, Pop3, Tls};

/// Implicit TLS (POP3S) options of `sessions` and `poll`.
#[derive(clap::Args, Clone)]
struct TlsArgs {
    /// Connect with implicit TLS (TLS 1.3).
    #[arg(long, requires = "ca")]
    tls: bool,
    /// PEM file of the certificates to trust (the CA, or the server's own certificate).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Server name sent (SNI) and checked against the certificate.
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// Resume TLS sessions by tickets (one session store shared by all clients).
    #[arg(long, requires = "tls")]
    resume: bool,
}

impl TlsArgs {
    fn build(&self) -> Result<Option<Arc<Tls>>> {
        match (&self.ca, self.tls) {
            (Some(ca), true) => Ok(Some(Arc::new(Tls::new(ca, &self.sni, self.resume)?))),
            _ => Ok(None),
        }
    }
}

#[derive(Parser)]
#[command(about = "Load generator for POP3/LMTP servers (see docs/BENCHMARKS.md)")]
struct Cli {
    /// Worker threads of the loader's runtime; 1 (the default) runs everything on one thread.
    #[arg(long, default_value_t = 1, global = true)]
    threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// (a) full sessions: connect, USER/PASS, STAT, UIDL, RETR each message, (DELE 1,) QUIT, in a
    /// loop.
    Sessions {
        #[arg(long)]
        addr: String,
        /// Login name; `{}` is replaced by the client's mailbox number (client i uses i % users).
        #[arg(long)]
        user: String,
        #[arg(long)]
        users: usize,
        #[arg(long)]
        pass: String,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Seconds to run (sessions in progress then finish); 10 unless `--sessions` is given.
        #[arg(long)]
        duration: Option<f64>,
        /// Stop once this many sessions have completed (with `--duration`: whichever comes first).
        #[arg(long)]
        sessions: Option<u64>,
        /// Fail unless STAT reports this many messages.
        #[arg(long)]
        expect: Option<u64>,
        /// Every K-th session of each client marks message 1 deleted before QUIT (0: never), and
        /// the client then delivers a replacement over LMTP (`--lmtp`), so STAT stays the same.
        #[arg(long, default_value_t = 0, requires = "lmtp")]
        dele_every: u64,
        /// LMTP address for the replacements of deleted messages.
        #[arg(long)]
        lmtp: Option<String>,
        /// Size of a replacement message, octets.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// Each session takes the next free mailbox of all `users` (one client per mailbox at a
        /// time), instead of client i always using mailbox i % users.
        #[arg(long)]
        rotate: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// (b) RETR of one message, repeated: MB/s and the server's peak memory growth.
    Retr {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        pass: String,
        #[arg(long, default_value_t = 1)]
        msg: u64,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        #[arg(long)]
        server_pid: u32,
    },
    /// (c) N connections idle at the greeting, or logged in: server memory per connection.
    Idle {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        count: usize,
        /// Log each connection in as `user` with `{}` replaced by its number.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "")]
        pass: String,
        /// Connections being opened (and logged in) at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long)]
        server_pid: u32,
        /// Seconds to wait after the last connection before measuring.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
    /// (d) LMTP delivery: `clients` deliverers share `count` messages of `size` octets.
    Lmtp {
        #[arg(long)]
        addr: String,
        /// Recipient; `{}` is replaced by message number % rcpts.
        #[arg(long)]
        rcpt: String,
        #[arg(long, default_value_t = 1)]
        rcpts: u64,
        #[arg(long, default_value_t = 10)]
        clients: usize,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 4096)]
        size: usize,
    },
    /// (e) login + STAT + UIDL on one mailbox, repeated: the time it takes.
    Bigbox {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        pass: String,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// (g) leave-on-server polls: connect, USER/PASS, STAT, UIDL, QUIT over many mailboxes, each
    /// used by one poll at a time (taken in turn from a queue of free ones).
    Poll {
        #[arg(long)]
        addr: String,
        /// Login name; `{}` is replaced by the mailbox number (0..users).
        #[arg(long)]
        user: String,
        #[arg(long)]
        users: usize,
        #[arg(long)]
        pass: String,
        /// Closed loop: clients polling back to back. Open loop (`--rate`): the most polls in
        /// flight at once (a poll due while that many run is skipped and counted).
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds to run (polls in progress then finish); 10 unless `--polls` is given.
        #[arg(long)]
        duration: Option<f64>,
        /// Stop once this many polls have been started (e.g. one pass over every mailbox).
        #[arg(long)]
        polls: Option<u64>,
        /// Open loop: start polls at this many per second whatever the completions; latency is
        /// counted from when a poll was due.
        #[arg(long)]
        rate: Option<f64>,
        /// Fail a poll unless STAT reports this many messages.
        #[arg(long)]
        expect: Option<u64>,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    let started = Instant::now();
    let cpu0 = mem::self_cpu_secs();
    let mut out = rt.block_on(run(cli.scenario))?;
    let wall = started.elapsed().as_secs_f64();
    let loader_cpu = (mem::self_cpu_secs() - cpu0) / wall;
    out["loader_cpu"] = json!(round(loader_cpu, 3));
    out["wall_secs"] = json!(round(wall, 2));
    eprintln!("{out}");
    println!("{out}");
    Ok(())
}

async fn run(s: Scenario) -> Result<serde_json::Value> {
    match s {
        Scenario::Sessions {
            addr,
            user,
            users,
            pass,
            clients,
            duration,
            sessions: stop_after,
            expect,
            dele_every,
            lmtp,
            size,
            rotate,
            tls,
        } => {
            let refill = match lmtp {
                Some(lmtp) if dele_every > 0 => Some(Refill {
                    every: dele_every,
                    lmtp,
                    size,
                }),
                _ => None,
            };
            let stop = Stop::new(duration, stop_after);
            let target = Target {
                addr,
                user,
                users,
                pass,
                tls: tls.build()?,
                expect,
            };
            sessions(target, clients, rotate, stop, refill).await
        }
        Scenario::Poll {
            addr,
            user,
            users,
            pass,
            clients,
            duration,
            polls,
            rate,
            expect,
            tls,
        } => {
            let stop = Stop::new(duration, polls);
            let target = Target {
                addr,
                user,
                users,
                pass,
                tls: tls.build()?,
                expect,
            };
            poll(Arc::new(target), clients, rate, stop).await
        }
        Scenario::Retr {
            addr,
            user,
            pass,
            msg,
            repeat,
            server_pid,
        } => retr(&addr, &user, &pass, msg, repeat, server_pid).await,
        Scenario::Idle {
            addr,
            count,
            user,
            pass,
            concurrency,
            server_pid,
            settle,
        } => idle(addr, count, user, pass, concurrency, server_pid, settle).await,
        Scenario::Lmtp {
            addr,
            rcpt,
            rcpts,
            clients,
            count,
            size,
        } => lmtp(addr, rcpt, rcpts, clients, count, size).await,
        Scenario::Bigbox {
            addr,
            user,
            pass,
            repeat,
        } => bigbox(&addr, &user, &pass, repeat).await,
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// p-th percentile (0..=100) in milliseconds, nearest rank.
fn pct_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    round(sorted[i].as_secs_f64() * 1000.0, 2)
}

/// When a `sessions` run ends: at a deadline, after a number of completed sessions, or at
/// whichever comes first.
struct Stop {
    deadline: Option<Instant>,
    after: Option<u64>,
}

impl Stop {
    /// `--duration` seconds from now (10 unless a count is given), or `after` many, whichever
    /// comes first.
    fn new(duration: Option<f64>, after: Option<u64>) -> Stop {
        let secs = duration.unwrap_or(if after.is_some() { f64::INFINITY } else { 10.0 });
        Stop {
            deadline: Duration::try_from_secs_f64(secs)
                .ok()
                .map(|d| Instant::now() + d),
            after,
        }
    }
}

/// Sessions that delete: every `every`-th session of a client marks message 1 deleted, and the
/// client delivers a message of `size` octets to its mailbox over LMTP at `lmtp` afterwards.
struct Refill {
    every: u64,
    lmtp: String,
    size: usize,
}

/// The server and mailboxes a `sessions` or `poll` run uses.
struct Target {
    addr: String,
    /// Login name with `{}` for the mailbox number.
    user: String,
    users: usize,
    pass: String,
    tls: Option<Arc<Tls>>,
    /// STAT must report this many messages.
    expect: Option<u64>,
}

impl Target {
    fn user(&self, mailbox: usize) -> String {
        self.user
            .replace("{}", &(mailbox % self.users.max(1)).to_string())
    }

    /// Connects and logs in as `user`; checks STAT. Returns the connection, the message count
    /// and whether TLS resumed.
    async fn open(&self, user: &str) -> Result<(Pop3, u64)> {
        let mut c = Pop3::connect_with(&self.addr, self.tls.as_deref()).await?;
        c.login(user, &self.pass).await?;
        let (n, _) = c.stat().await?;
        if let Some(e) = self.expect
            && n != e
        {
            bail!("{user}: STAT says {n} messages, expected {e}");
        }
        Ok((c, n))
    }
}

/// Mailboxes not in use, handed out in turn, so each is used by one client at a time and all
/// are used alike.
struct Pool(Mutex<VecDeque<usize>>);

impl Pool {
    fn new(n: usize) -> Self {
        Pool(Mutex::new((0..n.max(1)).collect()))
    }
    fn take(&self) -> Option<usize> {
        self.0.lock().expect("pool").pop_front()
    }
    fn put(&self, m: usize) {
        self.0.lock().expect("pool").push_back(m);
    }
}

/// TLS handshakes made and how many of them resumed.
#[derive(Default)]
struct Handshakes {
    full: AtomicU64,
    resumed: AtomicU64,
}

impl Handshakes {
    fn count(&self, resumed: Option<bool>) {
        match resumed {
            Some(true) => self.resumed.fetch_add(1, Ordering::Relaxed),
            Some(false) => self.full.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
    }
    /// `tls_handshakes`, `resumed`, `resumed_frac` for a result (null without TLS).
    fn json(&self, out: &mut serde_json::Value) {
        let (f, r) = (
            self.full.load(Ordering::Relaxed),
            self.resumed.load(Ordering::Relaxed),
        );
        let all = f + r;
        out["tls_handshakes"] = json!(all);
        out["resumed"] = json!(r);
        out["resumed_frac"] = if all > 0 {
            json!(round(r as f64 / all as f64, 3))
        } else {
            serde_json::Value::Null
        };
    }
}

async fn one_session(t: &Target, user: &str, dele: bool, hs: &Handshakes) -> Result<u64> {
    let (mut c, n) = t.open(user).await?;
    hs.count(c.resumed);
    let mut bytes = c.multi("UIDL").await?;
    for i in 1..=n {
        bytes += c.multi(&format!("RETR {i}")).await?;
    }
    if dele {
        c.cmd("DELE 1").await?;
    }
    c.quit().await?;
    Ok(bytes)
}

async fn sessions(
    target: Target,
    clients: usize,
    rotate: bool,
    stop: Stop,
    refill: Option<Refill>,
) -> Result<serde_json::Value> {
    let target = Arc::new(target);
    let stop = Arc::new(stop);
    let refill = refill.map(Arc::new);
    let pool = Arc::new(Pool::new(target.users));
    let hs = Arc::new(Handshakes::default());
    // Sessions begun (or about to begin); a failed one gives its number back.
    let begun = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (target, pool, hs) = (target.clone(), pool.clone(), hs.clone());
        let (stop, refill, begun) = (stop.clone(), refill.clone(), begun.clone());
        let fixed = target.user(c);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = Vec::new();
            let (mut bytes, mut deleted) = (0u64, 0u64);
            let mut lmtp: Option<Lmtp> = None;
            loop {
                if stop.deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = begun.fetch_add(1, Ordering::Relaxed);
                if stop.after.is_some_and(|a| n >= a) {
                    break;
                }
                let dele = refill
                    .as_ref()
                    .is_some_and(|r| lat.len() as u64 % r.every == r.every - 1);
                let mailbox = if rotate { pool.take() } else { None };
                let user = mailbox.map_or_else(|| fixed.clone(), |m| target.user(m));
                let t = Instant::now();
                let done = match one_session(&target, &user, dele, &hs).await {
                    Ok(b) => {
                        lat.push(t.elapsed());
                        bytes += b;
                        match (&refill, dele) {
                            (Some(r), true) => {
                                deleted += 1;
                                deliver(&mut lmtp, r, &user, n).await
                            }
                            _ => Ok(()),
                        }
                    }
                    Err(e) => {
                        begun.fetch_sub(1, Ordering::Relaxed);
                        Err(e)
                    }
                };
                if let Some(m) = mailbox {
                    pool.put(m);
                }
                if let Err(e) = done {
                    errors.push(format!("{e:#}"));
                    if errors.len() > 20 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (lat, errors, bytes, deleted)
        }));
    }
    let (mut lat, mut errors, mut bytes, mut deleted) = (Vec::new(), Vec::new(), 0u64, 0u64);
    for t in tasks {
        let (l, e, b, d) = t.await?;
        lat.extend(l);
        errors.extend(e);
        bytes += b;
        deleted += d;
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    if lat.is_empty() {
        bail!("no session succeeded: {:?}", errors.first());
    }
    let mut out = json!({
        "scenario": "sessions", "clients": clients, "sessions": lat.len(), "errors": errors.len(),
        "first_error": errors.first(), "secs": round(secs, 2), "deleted": deleted,
        "sessions_per_s": round(lat.len() as f64 / secs, 1),
        "p50_ms": pct_ms(&lat, 50.0), "p99_ms": pct_ms(&lat, 99.0),
        "mb_per_s": round(bytes as f64 / secs / 1e6, 2),
    });
    hs.json(&mut out);
    Ok(out)
}

/// One leave-on-server poll of `mailbox`: login, STAT, UIDL, QUIT.
async fn one_poll(t: &Target, mailbox: usize, hs: &Handshakes) -> Result<()> {
    let user = t.user(mailbox);
    let (mut c, _) = t.open(&user).await?;
    hs.count(c.resumed);
    c.multi("UIDL").await?;
    c.quit().await
}

/// What the poll tasks collect.
#[derive(Default)]
struct PollStats {
    lat: Vec<Duration>,
    errors: Vec<String>,
}

impl PollStats {
    /// A poll due at `due` ended with `r`.
    fn record(m: &Mutex<PollStats>, due: Instant, r: Result<()>) {
        let mut s = m.lock().expect("stats");
        match r {
            Ok(()) => s.lat.push(due.elapsed()),
            Err(e) => s.errors.push(format!("{e:#}")),
        }
    }
}

impl Stop {
    /// Whether no further poll may start; counts the one about to start.
    fn ended(&self, begun: &AtomicU64) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
            || self
                .after
                .is_some_and(|a| begun.fetch_add(1, Ordering::Relaxed) >= a)
    }
}

async fn poll(
    target: Arc<Target>,
    clients: usize,
    rate: Option<f64>,
    stop: Stop,
) -> Result<serde_json::Value> {
    let pool = Arc::new(Pool::new(target.users));
    let hs = Arc::new(Handshakes::default());
    let stats = Arc::new(Mutex::new(PollStats::default()));
    let stop = Arc::new(stop);
    let clients = clients.max(1);
    // Polls started so far (for `--polls`).
    let begun = Arc::new(AtomicU64::new(0));
    let mut skipped = 0u64;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    match rate {
        None => {
            for _ in 0..clients {
                let (target, pool, hs) = (target.clone(), pool.clone(), hs.clone());
                let (stats, begun, stop) = (stats.clone(), begun.clone(), stop.clone());
                tasks.spawn(async move {
                    while !stop.ended(&begun) {
                        let Some(m) = pool.take() else { break };
                        let due = Instant::now();
                        let r = one_poll(&target, m, &hs).await;
                        pool.put(m);
                        let failed = r.is_err();
                        PollStats::record(&stats, due, r);
                        if failed {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                });
            }
        }
        Some(rate) => {
            if !(rate > 0.0 && rate.is_finite()) {
                bail!("--rate must be a positive number");
            }
            // Open loop: a poll is due every `period` whether or not earlier ones finished;
            // if the loader falls behind, the late polls start at once and their latency
            // (counted from when they were due) shows the delay.
            let period = Duration::from_secs_f64(1.0 / rate);
            let mut due = Instant::now();
            loop {
                tokio::time::sleep_until(due.into()).await;
                let this = due;
                due += period;
                if stop.ended(&begun) {
                    break;
                }
                while tasks.try_join_next().is_some() {}
                if tasks.len() >= clients {
                    skipped += 1;
                    continue;
                }
                let Some(m) = pool.take() else {
                    skipped += 1;
                    continue;
                };
                let (target, pool, hs, stats) =
                    (target.clone(), pool.clone(), hs.clone(), stats.clone());
                tasks.spawn(async move {
                    let r = one_poll(&target, m, &hs).await;
                    pool.put(m);
                    PollStats::record(&stats, this, r);
                });
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        r?;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut st = std::mem::take(&mut *stats.lock().expect("stats"));
    st.lat.sort();
    if st.lat.is_empty() {
        bail!("no poll succeeded: {:?}", st.errors.first());
    }
    let mut out = json!({
        "scenario": "poll", "clients": clients, "mailboxes": target.users, "rate": rate,
        "polls": st.lat.len(), "errors": st.errors.len(), "first_error": st.errors.first(),
        "skipped": skipped, "secs": round(secs, 2),
        "polls_per_s": round(st.lat.len() as f64 / secs, 1),
        "p50_ms": pct_ms(&st.lat, 50.0), "p99_ms": pct_ms(&st.lat, 99.0),
    });
    hs.json(&mut out);
    Ok(out)
}

/// Delivers the replacement of a deleted message to `user`, over the client's LMTP connection
/// (opened on first use, reopened after a failure).
async fn deliver(lmtp: &mut Option<Lmtp>, r: &Refill, user: &str, seq: u64) -> Result<()> {
    let c = match lmtp {
        Some(c) => c,
        None => lmtp.insert(Lmtp::connect(&r.lmtp).await?),
    };
    let sent = c
        .deliver(user, &client::message(r.size, seq))
        .await
        .with_context(|| format!("replacement for {user}"));
    if sent.is_err() {
        *lmtp = None;
    }
    sent
}

/// Samples the server tree's PSS every 20 ms until stopped; returns the peak.
fn sampler(
    pid: u32,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let mut peak = 0;
        while !s.load(Ordering::Relaxed) {
            peak = peak.max(mem::pss_kb(pid).0);
            std::thread::sleep(Duration::from_millis(20));
        }
        peak.max(mem::pss_kb(pid).0)
    });
    (stop, h)
}

async fn retr(
    addr: &str,
    user: &str,
    pass: &str,
    msg: u64,
    repeat: usize,
    pid: u32,
) -> Result<serde_json::Value> {
    let mut rates = Vec::new();
    let mut growth = Vec::new();
    let mut octets = 0;
    for _ in 0..repeat {
        let mut c = Pop3::connect(addr).await?;
        c.login(user, pass).await?;
        // The baseline after the login: its password hash's working memory (19 MiB, kept by a
        // hashing thread for the next login) is not the RETR's.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let base = mem::pss_kb(pid).0;
        let (stop, h) = sampler(pid);
        let t = Instant::now();
        octets = c.multi(&format!("RETR {msg}")).await?;
        let secs = t.elapsed().as_secs_f64();
        c.quit().await?;
        stop.store(true, Ordering::Relaxed);
        let peak = tokio::task::spawn_blocking(move || h.join())
            .await?
            .unwrap_or(0);
        rates.push(octets as f64 / secs / 1e6);
        growth.push(peak.saturating_sub(base));
    }
    rates.sort_by(f64::total_cmp);
    let med = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    Ok(json!({
        "scenario": "retr", "octets": octets, "mb_per_s": round(med, 1),
        "mb_per_s_all": rates.iter().map(|r| round(*r, 1)).collect::<Vec<_>>(),
        "peak_growth_kb": growth.iter().max(), "growth_kb_all": growth,
    }))
}

async fn idle(
    addr: String,
    count: usize,
    user: Option<String>,
    pass: String,
    concurrency: usize,
    pid: u32,
    settle: f64,
) -> Result<serde_json::Value> {
    let (before, procs_before) = mem::pss_kb(pid);
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (addr, user, pass, next) = (addr.clone(), user.clone(), pass.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count as u64 {
                    return Ok::<_, anyhow::Error>(held);
                }
                let mut c = Pop3::connect(&addr)
                    .await
                    .with_context(|| format!("connection {i}"))?;
                if let Some(u) = &user {
                    c.login(&u.replace("{}", &i.to_string()), &pass)
                        .await
                        .with_context(|| format!("login {i}"))?;
                }
                held.push(c);
            }
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.extend(t.await??);
    }
    let opened = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let (after, procs_after) = mem::pss_kb(pid);
    let n = held.len();
    drop(held);
    let per = (after as f64 - before as f64) / n as f64;
    Ok(json!({
        "scenario": "idle", "logged_in": user.is_some(), "connections": n,
        "pss_before_kb": before, "pss_after_kb": after, "kb_per_conn": round(per, 1),
        "processes_before": procs_before, "processes_after": procs_after,
        "open_secs": round(opened, 2),
    }))
}

async fn lmtp(
    addr: String,
    rcpt: String,
    rcpts: u64,
    clients: usize,
    count: u64,
    size: usize,
) -> Result<serde_json::Value> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (addr, rcpt, next) = (addr.clone(), rcpt.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Lmtp::connect(&addr).await?;
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let m = client::message(size, i);
                let to = rcpt.replace("{}", &(i % rcpts.max(1)).to_string());
                let t = Instant::now();
                c.deliver(&to, &m)
                    .await
                    .with_context(|| format!("message {i} to {to}"))?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    Ok(json!({
        "scenario": "lmtp", "clients": clients, "messages": lat.len(), "size": size,
        "secs": round(secs, 2), "msgs_per_s": round(lat.len() as f64 / secs, 1),
        "p50_ms": pct_ms(&lat, 50.0), "p99_ms": pct_ms(&lat, 99.0),
    }))
}

async fn bigbox(addr: &str, user: &str, pass: &str, repeat: usize) -> Result<serde_json::Value> {
    let mut times = Vec::new();
    let (mut msgs, mut uidl_bytes) = (0, 0);
    for _ in 0..repeat {
        let mut c = Pop3::connect(addr).await?;
        let t = Instant::now();
        c.login(user, pass).await?;
        msgs = c.stat().await?.0;
        uidl_bytes = c.multi("UIDL").await?;
        times.push(t.elapsed());
        c.quit().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    times.sort();
    Ok(json!({
        "scenario": "bigbox", "messages": msgs, "uidl_bytes": uidl_bytes,
        "median_ms": pct_ms(&times, 50.0), "min_ms": pct_ms(&times, 0.0),
        "all_ms": times.iter().map(|d| round(d.as_secs_f64() * 1000.0, 1)).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// A POP3 server with one 1-message mailbox per login, counting finished sessions and DELEs;
    /// with `tls`, POP3S.
    async fn fake_pop3_on(
        quits: Arc<AtomicU64>,
        deles: Arc<AtomicU64>,
        tls: Option<tls::TlsAcceptor>,
    ) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let (quits, deles, tls) = (quits.clone(), deles.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(a) => serve(a.accept(s).await.unwrap(), quits, deles).await,
                        None => serve(s, quits, deles).await,
                    }
                });
            }
        });
        addr
    }

    async fn fake_pop3(quits: Arc<AtomicU64>, deles: Arc<AtomicU64>) -> String {
        fake_pop3_on(quits, deles, None).await
    }

    async fn serve<S>(s: S, quits: Arc<AtomicU64>, deles: Arc<AtomicU64>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (r, mut w) = tokio::io::split(s);
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"+OK ready\r\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let reply: &[u8] = match line.split(' ').next().unwrap() {
                "STAT" => b"+OK 1 7\r\n",
                "UIDL" => b"+OK\r\n1 a\r\n.\r\n",
                "RETR" => b"+OK\r\nhello\r\n.\r\n",
                "DELE" => {
                    deles.fetch_add(1, Ordering::Relaxed);
                    b"+OK\r\n"
                }
                "QUIT" => {
                    quits.fetch_add(1, Ordering::Relaxed);
                    w.write_all(b"+OK bye\r\n").await.unwrap();
                    return;
                }
                _ => b"+OK\r\n",
            };
            w.write_all(reply).await.unwrap();
        }
    }

    /// An LMTP server that accepts everything, counting deliveries.
    async fn fake_lmtp(delivered: Arc<AtomicU64>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let delivered = delivered.clone();
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = BufReader::new(r).lines();
                    w.write_all(b"220 ready\r\n").await.unwrap();
                    let mut data = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply: &[u8] = if data {
                            if line != "." {
                                continue;
                            }
                            data = false;
                            delivered.fetch_add(1, Ordering::Relaxed);
                            b"250 ok\r\n"
                        } else if line == "DATA" {
                            data = true;
                            b"354 go\r\n"
                        } else {
                            b"250 ok\r\n"
                        };
                        w.write_all(reply).await.unwrap();
                    }
                });
            }
        });
        addr
    }

    /// `--sessions N` ends after exactly N sessions however many clients share them, and with
    /// `--dele-every K` each client deletes in every K-th of its sessions and delivers one
    /// replacement per deletion.
    #[tokio::test]
    async fn stops_after_n_sessions_and_replaces_what_it_deletes() {
        let (quits, deles, delivered) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let pop3 = fake_pop3(quits.clone(), deles.clone()).await;
        let lmtp = fake_lmtp(delivered.clone()).await;
        let stop = Stop {
            deadline: None,
            after: Some(103),
        };
        let refill = Refill {
            every: 5,
            lmtp,
            size: 300,
        };
        let target = Target {
            addr: pop3,
            user: "u{}".into(),
            users: 3,
            pass: "pw".into(),
            tls: None,
            expect: Some(1),
        };
        let out = sessions(target, 3, false, stop, Some(refill))
            .await
            .unwrap();
        assert_eq!(out["sessions"], 103, "{out}");
        assert_eq!(out["errors"], 0, "{out}");
        assert_eq!(quits.load(Ordering::Relaxed), 103);
        // A client deletes in floor(k/5) of its k sessions: 20 in all, less one for each client
        // whose remainder the split pushed over 5 (at most 3 clients' remainders of 4: 19).
        let (d, got) = (deles.load(Ordering::Relaxed), &out["deleted"]);
        assert!((19..=20).contains(&d), "{d} DELEs");
        assert_eq!(*got, d, "{out}");
        assert_eq!(delivered.load(Ordering::Relaxed), d);
    }

    fn poll_target(addr: String, tls: Option<Arc<Tls>>) -> Arc<Target> {
        Arc::new(Target {
            addr,
            user: "u{}".into(),
            users: 5,
            pass: "pw".into(),
            tls,
            expect: Some(1),
        })
    }

    /// Polls over POP3S: `--polls N` makes exactly N polls (each a full session ending in QUIT);
    /// with `--resume` the handshakes after the first few resume on tickets and the result
    /// says so, without it none does.
    #[tokio::test]
    async fn polls_over_tls_and_counts_resumed_handshakes() {
        let tmp = tempfile::tempdir().unwrap();
        let files = tls::self_signed(&tmp.path().join("tls")).unwrap();
        let acceptor = tls::Certificates::load(files).unwrap().acceptor().unwrap();
        let quits = Arc::new(AtomicU64::new(0));
        let addr = fake_pop3_on(quits.clone(), Arc::default(), Some(acceptor)).await;
        let ca = tmp.path().join("tls/cert.pem");
        for resume in [false, true] {
            let tls = Arc::new(Tls::new(&ca, "localhost", resume).unwrap());
            let stop = Stop {
                deadline: None,
                after: Some(40),
            };
            let out = poll(poll_target(addr.clone(), Some(tls)), 2, None, stop)
                .await
                .unwrap();
            assert_eq!(out["polls"], 40, "{out}");
            assert_eq!(out["errors"], 0, "{out}");
            assert_eq!(out["tls_handshakes"], 40, "{out}");
            let resumed = out["resumed"].as_u64().unwrap();
            if resume {
                assert!(resumed >= 38, "{out}");
            } else {
                assert_eq!(resumed, 0, "{out}");
            }
        }
        assert_eq!(quits.load(Ordering::Relaxed), 80);
    }

    /// Open loop: polls start at the given rate for the given time, whatever their latency.
    #[tokio::test]
    async fn open_loop_polls_at_the_rate() {
        let addr = fake_pop3(Arc::default(), Arc::default()).await;
        let stop = Stop {
            deadline: Some(Instant::now() + Duration::from_millis(500)),
            after: None,
        };
        let out = poll(poll_target(addr, None), 4, Some(100.0), stop)
            .await
            .unwrap();
        let n = out["polls"].as_u64().unwrap();
        assert!((45..=52).contains(&n), "{out}");
        assert_eq!(out["errors"], 0, "{out}");
        assert!(out["resumed_frac"].is_null(), "{out}");
    }
}

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
//! - `bigbox`: login + STAT + UIDL on one (big) mailbox: the time it takes.
//!
//! Server memory is the summed PSS of the server process and its descendants (`--server-pid`).
//! Every result carries `loader_cpu`: the loader's own CPU seconds per wall second, so a run can
//! show the loader was not the bottleneck. By default the loader runs on one thread (it cannot
//! take more than one core).

mod client;
mod mem;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;

use client::{Lmtp, Pop3};

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
        } => {
            let duration = duration.unwrap_or(if stop_after.is_some() {
                f64::INFINITY
            } else {
                10.0
            });
            let refill = match lmtp {
                Some(lmtp) if dele_every > 0 => Some(Refill {
                    every: dele_every,
                    lmtp,
                    size,
                }),
                _ => None,
            };
            let stop = Stop {
                deadline: Duration::try_from_secs_f64(duration)
                    .ok()
                    .map(|d| Instant::now() + d),
                after: stop_after,
            };
            sessions(addr, user, users, pass, clients, stop, expect, refill).await
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

/// Sessions that delete: every `every`-th session of a client marks message 1 deleted, and the
/// client delivers a message of `size` octets to its mailbox over LMTP at `lmtp` afterwards.
struct Refill {
    every: u64,
    lmtp: String,
    size: usize,
}

async fn one_session(
    addr: &str,
    user: &str,
    pass: &str,
    expect: Option<u64>,
    dele: bool,
) -> Result<u64> {
    let mut c = Pop3::connect(addr).await?;
    c.login(user, pass).await?;
    let (n, _) = c.stat().await?;
    if let Some(e) = expect
        && n != e
    {
        bail!("{user}: STAT says {n} messages, expected {e}");
    }
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

#[allow(clippy::too_many_arguments)]
async fn sessions(
    addr: String,
    user: String,
    users: usize,
    pass: String,
    clients: usize,
    stop: Stop,
    expect: Option<u64>,
    refill: Option<Refill>,
) -> Result<serde_json::Value> {
    let stop = Arc::new(stop);
    let refill = refill.map(Arc::new);
    // Sessions begun (or about to begin); a failed one gives its number back.
    let begun = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (addr, pass) = (addr.clone(), pass.clone());
        let (stop, refill, begun) = (stop.clone(), refill.clone(), begun.clone());
        let user = user.replace("{}", &(c % users.max(1)).to_string());
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
                let t = Instant::now();
                let done = match one_session(&addr, &user, &pass, expect, dele).await {
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
    Ok(json!({
        "scenario": "sessions", "clients": clients, "sessions": lat.len(), "errors": errors.len(),
        "first_error": errors.first(), "secs": round(secs, 2), "deleted": deleted,
        "sessions_per_s": round(lat.len() as f64 / secs, 1),
        "p50_ms": pct_ms(&lat, 50.0), "p99_ms": pct_ms(&lat, 99.0),
        "mb_per_s": round(bytes as f64 / secs / 1e6, 2),
    }))
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

    /// A POP3 server with one 1-message mailbox per login, counting finished sessions and DELEs.
    async fn fake_pop3(quits: Arc<AtomicU64>, deles: Arc<AtomicU64>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let (quits, deles) = (quits.clone(), deles.clone());
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
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
                });
            }
        });
        addr
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
        let out = sessions(
            pop3,
            "u{}".into(),
            3,
            "pw".into(),
            3,
            stop,
            Some(1),
            Some(refill),
        )
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
}

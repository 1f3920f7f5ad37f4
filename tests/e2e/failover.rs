//! A Postgres failover under load (issue 23, "(j)"): a primary with a synchronous streaming
//! standby (`pgtest::ReplicatedPair`), pophost reaching it through HAProxy (`pgtest::Haproxy`,
//! repointed over its runtime API). While POP3 sessions DELE and QUIT and LMTP deliveries run,
//! the primary is killed with -9, the standby promoted and HAProxy repointed; then: no
//! acknowledged delivery is lost, no QUIT is applied by half (and every +OK QUIT is applied),
//! no maildrop is held by two sessions at once, and logins work again soon after the promotion,
//! without restarting pophost. bench/failover.py repeats this over many failovers.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

const MAILBOXES: usize = 6;
const SEED: usize = 6;

fn mailbox(i: usize) -> String {
    format!("user{i}@example.com")
}

/// A POP3 client for a service that may fail under it: every step is a `Result`.
struct Client {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
}

type Io<T> = std::io::Result<T>;

impl Client {
    fn connect(addr: SocketAddr) -> Io<Client> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut c = Client {
            rd: BufReader::new(s.try_clone()?),
            wr: s,
        };
        let greeting = c.line()?;
        if !greeting.starts_with("+OK") {
            return Err(std::io::Error::other(greeting));
        }
        Ok(c)
    }

    fn line(&mut self) -> Io<String> {
        let mut buf = String::new();
        if self.rd.read_line(&mut buf)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(buf.trim_end().to_string())
    }

    fn cmd(&mut self, line: &str) -> Io<String> {
        self.wr.write_all(format!("{line}\r\n").as_bytes())?;
        self.line()
    }

    /// A multi-line reply's lines (`None` for an -ERR status).
    fn multi(&mut self, line: &str) -> Io<Option<Vec<String>>> {
        if !self.cmd(line)?.starts_with("+OK") {
            return Ok(None);
        }
        let mut lines = Vec::new();
        loop {
            let l = self.line()?;
            if l == "." {
                return Ok(Some(lines));
            }
            lines.push(l);
        }
    }

    fn login(addr: SocketAddr, user: &str) -> Io<(Client, String)> {
        let mut c = Client::connect(addr)?;
        c.cmd(&format!("USER {user}"))?;
        let r = c.cmd(&format!("PASS {PASSWORD}"))?;
        Ok((c, r))
    }

    /// (uidl, subject) of every message; the subject (from TOP) of the first `with_subjects`
    /// only, `None` where TOP failed.
    fn listing(&mut self, with_subjects: usize) -> Io<Vec<(String, Option<String>)>> {
        let lines = self
            .multi("UIDL")?
            .ok_or_else(|| std::io::Error::other("UIDL refused"))?;
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let (n, uidl) = l
                .split_once(' ')
                .ok_or_else(|| std::io::Error::other("UIDL"))?;
            let subject = if i < with_subjects {
                self.multi(&format!("TOP {n} 0"))?.and_then(|top| {
                    top.iter()
                        .find_map(|h| h.strip_prefix("Subject: "))
                        .map(str::to_string)
                })
            } else {
                None
            };
            out.push((uidl.to_string(), subject));
        }
        Ok(out)
    }
}

/// One session that got +OK to PASS.
struct Held {
    mailbox: usize,
    login: Instant,
    /// When it sent QUIT (or ended without).
    quit_sent: Instant,
    listing: Vec<String>,
    /// (uidl, subject) of the messages it deleted.
    deleted: Vec<(String, String)>,
    quit_ok: bool,
}

/// POP3 sessions on one mailbox until `stop`: login (retrying while in use), UIDL, TOP and
/// DELE of the first two messages, QUIT.
fn pop3_worker(addr: SocketAddr, m: usize, stop: &AtomicBool, out: &Mutex<Vec<Held>>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut c, r)) = Client::login(addr, &mailbox(m)) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        if !r.starts_with("+OK") {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut held = Held {
            mailbox: m,
            login: Instant::now(),
            quit_sent: Instant::now(),
            listing: Vec::new(),
            deleted: Vec::new(),
            quit_ok: false,
        };
        let result = (|| -> Io<()> {
            let listing = c.listing(2)?;
            held.listing = listing.iter().map(|(u, _)| u.clone()).collect();
            for (n, (uidl, subject)) in listing.iter().take(2).enumerate() {
                // A message whose subject could not be read (TOP failed while the database was
                // away) is not deleted: its deletion could not be accounted for.
                let Some(subject) = subject else { break };
                if !c.cmd(&format!("DELE {}", n + 1))?.starts_with("+OK") {
                    return Ok(());
                }
                held.deleted.push((uidl.clone(), subject.clone()));
            }
            held.quit_sent = Instant::now();
            held.quit_ok = c.cmd("QUIT")?.starts_with("+OK");
            Ok(())
        })();
        let _ = result;
        out.lock().expect("sessions").push(held);
    }
}

/// LMTP deliveries round the mailboxes until `stop`; the subjects that got a 250.
fn lmtp_worker(addr: SocketAddr, w: usize, stop: &AtomicBool, acked: &Mutex<Vec<(usize, String)>>) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut l) = Lmtp::try_connect(addr) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let m = (w + n) % MAILBOXES;
            let subject = format!("w{w}-{n}");
            n += 1;
            match l.try_deliver("a@b.example", &[&mailbox(m)], &message(&subject)) {
                Ok(r) if r.len() == 1 && r[0].starts_with("250") => {
                    acked.lock().expect("acked").push((m, subject));
                }
                Ok(_) => break,
                Err(_) => break,
            }
        }
    }
}

#[test]
fn a_postgres_failover_under_load_loses_nothing_and_splits_nothing() {
    let mut pair = pgtest::ReplicatedPair::start();
    let proxy = pgtest::Haproxy::start(pair.primary.port);
    let db = Arc::new(pgtest::Database::create_on(&proxy.url("postgres")));
    let server = Server::spawn(
        Data::postgres(db.clone()).with_config(
            "node_id = \"fe1\"\n[database]\nacquire_timeout_secs = 3\n[locks]\nttl_secs = 3\n",
        ),
        &[],
    );
    let mut seeded = HashSet::new();
    for m in 0..MAILBOXES {
        server.add_user(&mailbox(m));
        for s in 0..SEED {
            let subject = format!("seed{m}-{s}");
            deliver(&server, &mailbox(m), &message(&subject));
            seeded.insert(subject);
        }
    }
    // A commit waits for the standby: pophost forces synchronous_commit on for its connections,
    // and the primary's one standby is synchronous.
    assert_eq!(
        db.query("SELECT sync_state FROM pg_stat_replication"),
        "sync"
    );

    let stop = AtomicBool::new(false);
    let sessions = Mutex::new(Vec::new());
    let acked = Mutex::new(Vec::new());
    let (killed, promoted) = std::thread::scope(|scope| {
        for m in 0..MAILBOXES {
            // Two sessions contend for each mailbox.
            for _ in 0..2 {
                let (stop, sessions, addr) = (&stop, &sessions, server.pop3);
                scope.spawn(move || pop3_worker(addr, m, stop, sessions));
            }
        }
        for w in 0..2 {
            let (stop, acked) = (&stop, &acked);
            scope.spawn(move || lmtp_worker(server.lmtp, w, stop, acked));
        }
        std::thread::sleep(Duration::from_secs(3));
        let killed = Instant::now();
        pair.kill_primary();
        // Some time without a primary, as failure detection takes in production.
        std::thread::sleep(Duration::from_millis(500));
        pair.promote();
        proxy.repoint(pair.primary.port);
        let promoted = Instant::now();
        std::thread::sleep(Duration::from_secs(6));
        stop.store(true, Ordering::Relaxed);
        (killed, promoted)
    });
    let sessions = sessions.into_inner().expect("sessions");
    let acked = acked.into_inner().expect("acked");

    // The final state of every mailbox, through the same pophost (never restarted).
    let mut finals: Vec<Vec<(String, Option<String>)>> = Vec::new();
    for m in 0..MAILBOXES {
        let t = Instant::now();
        let mut c = loop {
            match Client::login(server.pop3, &mailbox(m)) {
                Ok((c, r)) if r.starts_with("+OK") => break c,
                other => {
                    let r = other.map(|(_, r)| r);
                    assert!(t.elapsed() < Duration::from_secs(15), "{m}: {r:?}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        finals.push(c.listing(usize::MAX).expect("final listing"));
        let _ = c.cmd("QUIT");
    }

    let acked_subjects: HashSet<&str> = acked.iter().map(|(_, s)| s.as_str()).collect();
    let known = |s: &str| acked_subjects.contains(s) || seeded.contains(s);
    let (mut half, mut quit_not_applied, mut double, mut removed) =
        (Vec::new(), Vec::new(), Vec::new(), HashSet::new());
    for (m, last) in finals.iter().enumerate() {
        let mut mine: Vec<&Held> = sessions.iter().filter(|h| h.mailbox == m).collect();
        mine.sort_by_key(|h| h.login);
        // [login +OK received, QUIT sent] lies inside a session's true hold; two of these
        // overlapping, both QUITs that deleted something answered +OK (their fencing tokens
        // were still current), is a double hold.
        let ok: Vec<&&Held> = mine
            .iter()
            .filter(|h| h.quit_ok && !h.deleted.is_empty())
            .collect();
        for (i, h) in ok.iter().enumerate() {
            for later in &ok[i + 1..] {
                if later.login < h.quit_sent {
                    double.push((m, i));
                }
            }
        }
        for (i, h) in mine.iter().enumerate() {
            let next: HashSet<&str> = match mine.get(i + 1) {
                Some(next) => next.listing.iter().map(String::as_str).collect(),
                None => last.iter().map(|(u, _)| u.as_str()).collect(),
            };
            // Only messages whose delivery was acknowledged (or seeded) count: one committed
            // on the old primary but never on the standby was never acknowledged, and may
            // vanish.
            let counted: Vec<&(String, String)> =
                h.deleted.iter().filter(|(_, s)| known(s)).collect();
            let left = counted
                .iter()
                .filter(|(u, _)| next.contains(u.as_str()))
                .count();
            if left != 0 && left != counted.len() {
                half.push((m, i, left, counted.len()));
            }
            if h.quit_ok && left != 0 {
                quit_not_applied.push((m, i));
            }
            for (u, s) in &h.deleted {
                if !next.contains(u.as_str()) {
                    removed.insert(s.clone());
                }
            }
        }
    }
    let present: HashSet<&str> = finals
        .iter()
        .flatten()
        .map(|(_, s)| s.as_deref().expect("a subject in the final listing"))
        .collect();
    // What the clients cannot account for is looked up in the store itself: in `messages`, or
    // in the recycle bin every POP3 deletion moves a message to.
    let pick = r"substring(convert_from(prefix, 'UTF8') from 'Subject: ([^\r\n]*)')";
    let stored = db.query(&format!(
        "SELECT {pick} FROM messages UNION ALL SELECT {pick} FROM binned_messages"
    ));
    let stored: HashSet<&str> = stored.lines().collect();
    let lost: Vec<&str> = acked
        .iter()
        .map(|(_, s)| s.as_str())
        .filter(|s| !present.contains(s) && !removed.contains(*s) && !stored.contains(s))
        .collect();
    let first_login = sessions
        .iter()
        .filter(|h| h.login > promoted)
        .map(|h| h.login)
        .min()
        .expect("no login after the promotion");
    let quits_ok = sessions.iter().filter(|h| h.quit_ok).count();
    let after = acked.len();
    eprintln!(
        "failover: {} sessions ({quits_ok} QUIT +OK), {after} deliveries acknowledged; first \
         login {:?} after the kill ({:?} after the repoint); lost {}, half {}, double {}",
        sessions.len(),
        first_login - killed,
        first_login - promoted,
        lost.len(),
        half.len(),
        double.len()
    );
    assert!(lost.is_empty(), "acknowledged deliveries lost: {lost:?}");
    assert!(half.is_empty(), "QUITs applied by half: {half:?}");
    assert!(
        quit_not_applied.is_empty(),
        "+OK QUITs not applied: {quit_not_applied:?}"
    );
    assert!(double.is_empty(), "maildrops held twice: {double:?}");
    assert!(
        first_login - killed < Duration::from_secs(10),
        "first login {:?} after the kill",
        first_login - killed
    );
    // Load ran on both sides of the failover.
    assert!(sessions.iter().any(|h| h.quit_ok && h.quit_sent < killed));
    assert!(sessions.iter().any(|h| h.quit_ok && h.login > promoted));
    // The fencing tokens of the new primary continue the old one's: no token was handed out
    // twice (every login and its token is in login_events).
    assert_eq!(
        db.query(
            "SELECT count(*) FROM (SELECT token FROM login_events WHERE token IS NOT NULL \
             GROUP BY token HAVING count(*) > 1) t"
        ),
        "0"
    );
    let mut l = Lmtp::connect(server.lmtp);
    let r = l.deliver("a@b.example", &[&mailbox(0)], &message("after"));
    assert!(r[0].starts_with("250"), "{r:?}");
}

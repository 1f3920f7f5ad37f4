//! Several frontends on one Postgres (always Postgres, whatever POPHOST_TEST_BACKEND says): the
//! maildrop lock across frontends, takeover after a crash or a stall, kill -9 during QUIT over
//! many trials, Postgres itself crashing, and two servers started with one node_id.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::harness::*;

const JOHN: &str = "john@example.com";

fn frontend(db: &Arc<pgtest::Database>, node: &str, extra_config: &str) -> Server {
    let config = format!("node_id = \"{node}\"\n{extra_config}");
    Server::spawn(Data::postgres(db.clone()).with_config(&config), &[])
}

fn try_login(server: &Server) -> Result<Pop3, String> {
    let mut c = Pop3::connect(server.pop3);
    c.cmd(&format!("USER {JOHN}"));
    let r = c.cmd(&format!("PASS {PASSWORD}"));
    if r.starts_with("+OK") { Ok(c) } else { Err(r) }
}

/// Logs in through `server`, retrying while the maildrop is in use; returns the session and
/// how long it took.
fn login_when_free(server: &Server, limit: Duration) -> (Pop3, Duration) {
    let start = Instant::now();
    loop {
        match try_login(server) {
            Ok(c) => return (c, start.elapsed()),
            Err(r) => {
                assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
                assert!(
                    start.elapsed() < limit,
                    "maildrop still locked after {limit:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn subjects(c: &mut Pop3) -> Vec<String> {
    let (count, _) = c.stat();
    (1..=count)
        .map(|n| {
            let (_, body) = c.fetch(&format!("TOP {n} 0"));
            let text = String::from_utf8_lossy(&body).to_string();
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .expect("subject")
                .to_string()
        })
        .collect()
}

#[test]
fn one_of_three_frontends_gets_the_maildrop() {
    let db = Arc::new(pgtest::Database::create());
    let fronts: Vec<Server> = (1..=3)
        .map(|i| frontend(&db, &format!("fe{i}"), ""))
        .collect();
    fronts[0].add_user(JOHN);
    deliver(&fronts[0], JOHN, &message("shared"));
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(3));
        let replies: Vec<(String, Pop3)> = std::thread::scope(|scope| {
            let handles: Vec<_> = fronts
                .iter()
                .map(|f| {
                    let barrier = barrier.clone();
                    scope.spawn(move || {
                        let mut c = Pop3::connect(f.pop3);
                        c.cmd(&format!("USER {JOHN}"));
                        barrier.wait();
                        (c.cmd(&format!("PASS {PASSWORD}")), c)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let ok = replies.iter().filter(|(r, _)| r.starts_with("+OK")).count();
        let in_use = replies
            .iter()
            .filter(|(r, _)| r.starts_with("-ERR [IN-USE]"))
            .count();
        assert_eq!(
            (ok, in_use),
            (1, 2),
            "round {round}: {:?}",
            replies.iter().map(|(r, _)| r).collect::<Vec<_>>()
        );
        for (r, mut c) in replies {
            if r.starts_with("+OK") {
                assert!(c.cmd("QUIT").starts_with("+OK"));
            }
        }
    }
}

#[test]
fn a_killed_holder_is_taken_over_after_the_ttl() {
    let db = Arc::new(pgtest::Database::create());
    let ttl = "[locks]\nttl_secs = 3\n";
    let holder = frontend(&db, "fe1", ttl);
    let other = frontend(&db, "fe2", ttl);
    holder.add_user(JOHN);
    deliver(&holder, JOHN, &message("m"));
    let _session = login_when_free(&holder, Duration::from_secs(5)).0;
    let _ = holder.kill9();
    assert!(
        try_login(&other).is_err_and(|r| r.starts_with("-ERR [IN-USE]")),
        "lease still live right after the kill"
    );
    let (mut c, waited) = login_when_free(&other, Duration::from_secs(10));
    eprintln!("takeover after kill -9: {waited:?} (ttl 3 s)");
    assert!(waited <= Duration::from_secs(5), "took {waited:?}");
    assert_eq!(c.stat().0, 1);
}

#[test]
fn a_restarted_frontend_frees_its_old_leases_at_once() {
    let db = Arc::new(pgtest::Database::create());
    // A long TTL: only the restart's recovery can free the lease quickly.
    let ttl = "[locks]\nttl_secs = 60\n";
    let holder = frontend(&db, "fe1", ttl);
    let other = frontend(&db, "fe2", ttl);
    holder.add_user(JOHN);
    let _session = login_when_free(&holder, Duration::from_secs(5)).0;
    let data = holder.kill9();
    assert!(
        try_login(&other).is_err(),
        "lease held by the dead frontend"
    );
    let restarted_at = Instant::now();
    let _restarted = Server::restart(data);
    let (_c, _) = login_when_free(&other, Duration::from_secs(3));
    let freed = restarted_at.elapsed();
    eprintln!("maildrop usable {freed:?} after the holder's restart began");
    assert!(freed < Duration::from_secs(3));
}

#[test]
fn a_stalled_holders_update_is_refused_after_a_takeover() {
    let db = Arc::new(pgtest::Database::create());
    let ttl = "[locks]\nttl_secs = 3\n";
    let stalled = frontend(&db, "fe1", ttl);
    let other = frontend(&db, "fe2", ttl);
    stalled.add_user(JOHN);
    for s in ["one", "two", "three"] {
        deliver(&stalled, JOHN, &message(s));
    }
    let (mut first, _) = login_when_free(&stalled, Duration::from_secs(5));
    assert!(first.cmd("DELE 1").starts_with("+OK"));
    signal(stalled.pid(), "STOP");
    let (mut second, waited) = login_when_free(&other, Duration::from_secs(15));
    assert!(second.cmd("DELE 2").starts_with("+OK"));
    assert!(second.cmd("QUIT").starts_with("+OK"));
    signal(stalled.pid(), "CONT");
    let r = first.cmd("QUIT");
    assert!(
        r.starts_with("-ERR [SYS/TEMP]"),
        "stale UPDATE answered {r}"
    );
    let (mut check, _) = login_when_free(&other, Duration::from_secs(5));
    assert_eq!(
        subjects(&mut check),
        ["one", "three"],
        "only the live session's deletion applied"
    );
    eprintln!("takeover of a stalled holder after {waited:?}");
}

/// kill -9 of a frontend at spread-out moments during QUIT. POPHOST_QUIT_TRIALS sets the count
/// (default 50; scripts/quit-kill-trials runs more).
#[test]
fn kill_during_quit_on_postgres_never_half_applies() {
    let trials: u64 = std::env::var("POPHOST_QUIT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let db = Arc::new(pgtest::Database::create());
    let mut server = frontend(&db, "fe1", "");
    server.add_user(JOHN);
    let (mut applied, mut not_applied, mut answered) = (0, 0, 0);
    let mut next = 0;
    for trial in 0..trials {
        // Refill to 20 messages with fresh subjects.
        let (mut c, _) = login_when_free(&server, Duration::from_secs(5));
        let have = c.stat().0;
        c.cmd("QUIT");
        let mut l = Lmtp::connect(server.lmtp);
        for _ in have..20 {
            let r = l.deliver("a@b.example", &[JOHN], &message(&format!("t{next}")));
            assert!(r[0].starts_with("250"), "{r:?}");
            next += 1;
        }
        drop(l);
        let (mut c, _) = login_when_free(&server, Duration::from_secs(5));
        let before = subjects(&mut c);
        let mut batch = String::new();
        for n in (1..=before.len()).step_by(2) {
            batch.push_str(&format!("DELE {n}\r\n"));
        }
        c.send_raw(batch.as_bytes());
        for _ in (1..=before.len()).step_by(2) {
            assert!(c.line().starts_with("+OK"));
        }
        let kept: HashSet<String> = before.iter().skip(1).step_by(2).cloned().collect();
        c.send("QUIT");
        // Delays from 0 to ~12 ms, spread over the trials, to land before, in and after the commit.
        std::thread::sleep(Duration::from_micros((trial * 2411) % 12_000));
        let data = server.kill9();
        let reply = c.try_line();
        server = Server::restart(data);
        let (mut check, _) = login_when_free(&server, Duration::from_secs(3));
        let after: HashSet<String> = subjects(&mut check).into_iter().collect();
        check.cmd("QUIT");
        let all: HashSet<String> = before.iter().cloned().collect();
        assert!(
            after == all || after == kept,
            "trial {trial}: partial expunge: {} of {} left",
            after.len(),
            all.len()
        );
        if after == kept {
            applied += 1;
        } else {
            not_applied += 1;
        }
        if reply.as_deref().is_some_and(|r| r.starts_with("+OK")) {
            answered += 1;
            assert_eq!(
                after, kept,
                "trial {trial}: +OK was sent but the deletion is not there"
            );
        }
    }
    eprintln!(
        "{trials} kill -9 during QUIT trials on Postgres: {applied} applied whole, {not_applied} not applied, {answered} answered +OK; 0 partial, 0 lost"
    );
}

#[test]
fn postgres_crash_restart_loses_nothing_acknowledged_and_hangs_nothing() {
    let cluster = pgtest::Cluster::start();
    let db = Arc::new(pgtest::Database::create_on(&cluster.url("postgres")));
    // A short lease: a session whose release failed while Postgres was down must not keep the
    // mailbox locked for longer than that.
    let server = frontend(
        &db,
        "fe1",
        "[database]\nacquire_timeout_secs = 2\n[locks]\nttl_secs = 5\n",
    );
    server.add_user(JOHN);
    for i in 0..5 {
        deliver(&server, JOHN, &message(&format!("before{i}")));
    }
    let (mut logged_in, _) = login_when_free(&server, Duration::from_secs(5));
    let mut waiting = Pop3::connect(server.pop3);
    assert!(waiting.cmd(&format!("USER {JOHN}")).starts_with("+OK"));

    cluster.restart_immediate();
    // Open sessions get an answer (or a close), never a hang.
    let t = Instant::now();
    let stat = logged_in.cmd("STAT");
    assert!(stat.starts_with("+OK 5 "), "{stat}");
    let quit = logged_in.try_line_after("QUIT");
    assert!(
        quit.as_deref()
            .is_none_or(|r| r.starts_with("+OK") || r.starts_with("-ERR [SYS/TEMP]")),
        "{quit:?}"
    );
    let pass = waiting.try_line_after(&format!("PASS {PASSWORD}"));
    assert!(
        pass.as_deref()
            .is_none_or(|r| r.starts_with("+OK") || r.starts_with("-ERR [SYS/TEMP]")),
        "{pass:?}"
    );
    drop(waiting);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "sessions stalled {:?}",
        t.elapsed()
    );

    // Postgres down: a login fails fast with [SYS/TEMP] and a delivery is deferred with 4xx.
    cluster.stop_immediate();
    let t = Instant::now();
    let Err(down) = try_login(&server) else {
        panic!("login worked with Postgres down")
    };
    assert!(down.starts_with("-ERR [SYS/TEMP]"), "{down}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    let mut l = Lmtp::connect(server.lmtp);
    assert!(l.cmd("LHLO x").starts_with("250"));
    assert!(l.cmd("MAIL FROM:<a@b.example>").starts_with("250"));
    let rcpt = l.cmd(&format!("RCPT TO:<{JOHN}>"));
    assert!(rcpt.starts_with("451 4.3.0"), "{rcpt}");
    drop(l);

    // Back up: the service recovers by itself; everything acknowledged is there.
    cluster.start_again();
    let (mut c, waited) = login_when_free(&server, Duration::from_secs(30));
    eprintln!("first login {waited:?} after Postgres came back");
    let got: HashSet<String> = subjects(&mut c).into_iter().collect();
    for i in 0..5 {
        assert!(
            got.contains(&format!("before{i}")),
            "acknowledged message before{i} lost"
        );
    }
    c.cmd("QUIT");
    deliver(&server, JOHN, &message("after"));
}

/// Two servers with one node_id (a copied config, issue 16). From another data directory
/// (another machine, say) the second sees the first renew its claim and refuses to start,
/// naming it; from the same data directory the serve lock refuses it at once. Neither frees
/// anything: the first one's session keeps its lock and its QUIT applies, a DATA in flight keeps
/// its half-written body and is delivered.
#[test]
fn a_second_server_with_the_same_node_id_is_refused() {
    let db = Arc::new(pgtest::Database::create());
    let config = "node_id = \"fe1\"\n[locks]\nttl_secs = 3\n";
    let first = frontend(&db, "fe1", "[locks]\nttl_secs = 3\n");
    first.add_user(JOHN);
    deliver(&first, JOHN, &message("delete me"));
    let (mut session, _) = login_when_free(&first, Duration::from_secs(5));
    assert!(session.cmd("DELE 1").starts_with("+OK"));
    let in_flight = DataInFlight::start(&first, JOHN);

    let elsewhere = Data::postgres(db.clone()).with_config(config);
    let t = Instant::now();
    let out = serve_refused(elsewhere.command(), Duration::from_secs(20));
    let refused_after = t.elapsed();
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "node_id \"fe1\" is in use by another running pophost (pid {} on host ",
            first.pid()
        )),
        "{}",
        show(&out)
    );
    // The first renews every second (TTL 3 s): seen within about that of the second's start.
    assert!(refused_after < Duration::from_secs(15), "{refused_after:?}");

    let out = serve_refused(first.data().command(), Duration::from_secs(20));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "another pophost (pid {}) is serving from data directory",
            first.pid()
        )),
        "{}",
        show(&out)
    );

    let reply = in_flight.finish();
    assert!(reply.starts_with("250"), "DATA in flight: {reply}");
    assert!(
        try_login(&first).is_err_and(|r| r.starts_with("-ERR [IN-USE]")),
        "the first session's lock was freed"
    );
    assert!(
        session.cmd("QUIT").starts_with("+OK"),
        "the first session's QUIT"
    );
    let (mut c, _) = login_when_free(&first, Duration::from_secs(5));
    assert_eq!(subjects(&mut c), ["in flight"]);
}

/// A frontend killed with -9 and started again from another data directory cannot tell that
/// its predecessor is dead: it waits for the old claim to lapse (one lock TTL at most; less if
/// its own start took that long), then starts and frees the dead run's locks. (From the same
/// data directory it starts at once: `a_restarted_frontend_frees_its_old_leases_at_once`.)
#[test]
fn a_node_killed_elsewhere_is_taken_over_once_its_claim_lapses() {
    let db = Arc::new(pgtest::Database::create());
    let ttl = "[locks]\nttl_secs = 3\n";
    let first = frontend(&db, "fe1", ttl);
    first.add_user(JOHN);
    let _session = login_when_free(&first, Duration::from_secs(5)).0;
    let _ = first.kill9();
    let t = Instant::now();
    let second = frontend(&db, "fe1", ttl);
    let started = t.elapsed();
    eprintln!("started {started:?} after the kill (TTL 3 s)");
    assert!(started < Duration::from_secs(10), "{started:?}");
    let log = second.log.lock().expect("log").clone();
    assert!(log.contains("recovered from previous run locks=1"), "{log}");
}

/// A frontend stopped with SIGTERM gives its node up: started again from another data
/// directory it starts at once, long TTL or not.
#[test]
fn a_cleanly_stopped_node_is_free_at_once() {
    let db = Arc::new(pgtest::Database::create());
    let ttl = "[locks]\nttl_secs = 60\n";
    let (status, _) = frontend(&db, "fe1", ttl).terminate();
    assert!(status.success(), "{status}");
    let t = Instant::now();
    let second = frontend(&db, "fe1", ttl);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let log = second.log.lock().expect("log").clone();
    assert!(!log.contains("another server holds this node_id"), "{log}");
}

/// A frontend stalled past its TTL can have its node taken over by a second one with the same
/// node_id. When it resumes, its next renewal finds that out and it shuts down, naming the
/// other, instead of serving beside it.
#[test]
fn a_server_whose_node_was_taken_over_shuts_down() {
    let db = Arc::new(pgtest::Database::create());
    let ttl = "[locks]\nttl_secs = 3\n";
    let stalled = frontend(&db, "fe1", ttl);
    signal(stalled.pid(), "STOP");
    let other = frontend(&db, "fe1", ttl);
    signal(stalled.pid(), "CONT");
    let t = Instant::now();
    let needle = format!(
        "taken over by another pophost (pid {} on host ",
        other.pid()
    );
    while !stalled.log.lock().expect("log").contains(&needle) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{}",
            stalled.log.lock().expect("log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = stalled.terminate();
    assert!(!status.success(), "{status}");
    let mut c = Pop3::connect(other.pop3);
    assert!(c.cmd("CAPA").starts_with("+OK"), "the other one serves on");
}

/// A frontend with real certificates, no APOP and a data directory it cannot write still starts
/// on Postgres (its node claim keeps a second server out), without the serve lock: it says so.
#[test]
fn a_frontend_whose_data_directory_cannot_be_written_still_starts() {
    let db = Arc::new(pgtest::Database::create());
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", show(&made));
    let config = format!(
        "node_id = \"fe1\"\n[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    // A data directory below a regular file can never be made (even by root).
    let blocker = tmp.path().join("not-a-directory");
    std::fs::write(&blocker, "").expect("write");
    let mut data = Data::postgres(db.clone()).with_config(&config);
    data.dir = blocker.join("data");
    let server = Server::spawn(data, &[]);
    let log = server.log.lock().expect("log").clone();
    assert!(log.contains("no serve lock"), "{log}");

    let elsewhere = Data::postgres(db.clone()).with_config(&config);
    let out = serve_refused(elsewhere.command(), Duration::from_secs(60));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node_id \"fe1\" is in use"),
        "{}",
        show(&out)
    );
}

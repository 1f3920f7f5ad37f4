//! Brute-force defence over real TCP: the failure delay, the growing penalty of a (network,
//! account) pair and then of the whole network, attempts sent at once, the soft per-account
//! limit, over-long passwords, the auth cache and password changes, the cleartext policy, and
//! that unknown and known users cost the same.

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::harness::*;

const JOHN: &str = "john@example.com";
const JANE: &str = "jane@example.com";

fn attempt(server: &Server, login: &str, password: &str) -> (String, Duration) {
    let mut c = Pop3::connect(server.pop3);
    assert!(c.cmd(&format!("USER {login}")).starts_with("+OK"));
    let t = Instant::now();
    let r = c.cmd(&format!("PASS {password}"));
    (r, t.elapsed())
}

#[test]
fn a_failed_login_waits_the_failure_delay() {
    let s = Server::start_with_config("[auth]\nfailure_delay_ms = 400\n");
    s.add_user(JOHN);
    let (r, took) = attempt(&s, JOHN, "wrong");
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    let (r, _) = attempt(&s, JOHN, PASSWORD);
    assert!(r.starts_with("+OK"), "{r}");
}

/// `n` wrong passwords for `login` at once, one connection each (USER first, then every PASS
/// released together): how long each waited for its answer, shortest first.
fn attempts_at_once(server: &Server, login: &str, n: usize) -> Vec<Duration> {
    let start = Arc::new(Barrier::new(n));
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let mut c = Pop3::connect(server.pop3);
            assert!(c.cmd(&format!("USER {login}")).starts_with("+OK"));
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let t = Instant::now();
                let r = c.cmd("PASS guess");
                assert!(r.starts_with("-ERR [AUTH]"), "{r}");
                t.elapsed()
            })
        })
        .collect();
    let mut took: Vec<Duration> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    took.sort();
    took
}

/// Penalty capped at 2 s; room for 20 connections at once from one address.
const CAPPED: &str = "[auth]\nfailure_delay_ms = 0\nip_penalty_max_secs = 2\n\
                      [pop3]\nmax_connections_per_ip = 50\n";

/// The wait after `failures` of one account from one network under `CAPPED`: none for the first
/// five, then 1 s, then 2 s (the cap) from the tenth.
fn capped_rule(failures: usize) -> Duration {
    Duration::from_secs(match failures {
        0..5 => 0,
        5..10 => 1,
        _ => 2,
    })
}

#[test]
fn attempts_sent_at_once_are_penalised_as_if_sent_one_after_another() {
    let sequential = std::thread::spawn(|| {
        let s = Server::start_with_config(CAPPED);
        s.add_user(JOHN);
        for _ in 0..20 {
            assert!(attempt(&s, JOHN, "guess").0.starts_with("-ERR [AUTH]"));
        }
        attempt(&s, JOHN, "guess").1
    });
    let s = Server::start_with_config(CAPPED);
    s.add_user(JOHN);
    // Each attempt is counted before its check, so each waits for the ones counted before it;
    // and they take turns, so their waits add up as if they had been sent one after another
    // (twenty connections guess no faster than one).
    let took = attempts_at_once(&s, JOHN, 20);
    let mut one_by_one = Duration::ZERO;
    for (k, t) in took.iter().enumerate() {
        one_by_one += capped_rule(k);
        assert!(
            *t >= one_by_one,
            "of 20 attempts at once, the one after {k} waited {t:?}, not {one_by_one:?}: {took:?}"
        );
    }
    let (r, next) = attempt(&s, JOHN, "guess");
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    let after_sequential = sequential.join().expect("sequential");
    eprintln!("after 20 failures at once: {next:?}; after 20 one by one: {after_sequential:?}");
    assert!(after_sequential >= capped_rule(20), "{after_sequential:?}");
    assert!(next >= capped_rule(20), "{next:?}");
    assert!(
        next + Duration::from_millis(500) >= after_sequential,
        "after 20 at once {next:?}, after 20 one by one {after_sequential:?}"
    );
}

#[test]
fn a_guessed_account_does_not_slow_its_neighbours_behind_the_same_address() {
    let s = Server::start_with_config(CAPPED);
    s.add_user(JOHN);
    s.add_user(JANE);
    attempts_at_once(&s, JANE, 20);
    // John is behind the same address (127.0.0.1), say a NAT: not slowed (the least penalty
    // is 1 s).
    let (r, took) = attempt(&s, JOHN, PASSWORD);
    assert!(r.starts_with("+OK"), "{r}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Jane's (network, account) pair is slowed, even with her password; her success clears it.
    let (r, took) = attempt(&s, JANE, PASSWORD);
    assert!(r.starts_with("+OK"), "{r}");
    assert!(took >= capped_rule(20), "{took:?}");
    let (r, took) = attempt(&s, JANE, PASSWORD);
    assert!(r.starts_with("+OK"), "{r}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn a_guessed_account_then_its_whole_network_waits_longer_each_time() {
    let s =
        Server::start_with_config("[auth]\nfailure_delay_ms = 0\nnetwork_failures_per_hour = 10\n");
    s.add_user(JOHN);
    for _ in 0..5 {
        assert!(attempt(&s, JOHN, "x").0.starts_with("-ERR [AUTH]"));
    }
    // Five failures of John from this address: his next login from it waits 1 s, even with the
    // right password. The success clears the pair, not the network's five failures.
    let (r, took) = attempt(&s, JOHN, PASSWORD);
    assert!(r.starts_with("+OK"), "{r}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    let (r, took) = attempt(&s, JOHN, PASSWORD);
    assert!(r.starts_with("+OK"), "{r}");
    assert!(
        took < Duration::from_secs(1),
        "the pair was cleared: {took:?}"
    );
    // Many accounts guessed once each: no pair is slowed, but past 10 failures from the
    // network, every login from it waits, on the same curve.
    for i in 0..5 {
        let login = format!("nobody{i}@example.com");
        assert!(attempt(&s, &login, "x").0.starts_with("-ERR [AUTH]"));
    }
    let (r, took) = attempt(&s, JOHN, PASSWORD);
    assert!(r.starts_with("+OK"), "{r}");
    assert!(took >= Duration::from_secs(1), "ten failures: {took:?}");
    for i in 5..10 {
        attempt(&s, &format!("nobody{i}@example.com"), "x");
    }
    let (_, took) = attempt(&s, "nobody10@example.com", "x");
    assert!(took >= Duration::from_secs(2), "fifteen failures: {took:?}");
}

#[test]
fn an_attacked_account_is_slowed_not_locked() {
    let s = Server::start_with_config(
        "[auth]\nfailure_delay_ms = 0\naccount_failures_per_hour = 3\naccount_penalty_secs = 1\n",
    );
    s.add_user(JOHN);
    for _ in 0..3 {
        assert!(attempt(&s, JOHN, "guess").0.starts_with("-ERR [AUTH]"));
    }
    let (r, took) = attempt(&s, JOHN, PASSWORD);
    assert!(r.starts_with("+OK"), "the owner still gets in: {r}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
}

#[test]
fn over_long_passwords_are_refused_without_hashing() {
    let s = Server::start_with_config("[auth]\nfailure_delay_ms = 0\n");
    s.add_user(JOHN);
    // PASS takes the rest of a command line (255 octets), so a 5000-byte password can only be
    // refused as a line; the 4096-byte limit itself guards SASL responses and is unit-tested.
    let mut c = Pop3::connect(s.pop3);
    c.cmd(&format!("USER {JOHN}"));
    let r = c.cmd(&format!("PASS {}", "x".repeat(5000)));
    assert!(r.starts_with("-ERR"), "{r}");
    assert!(!c.capa().is_empty());
}

#[test]
fn a_password_change_applies_to_new_logins_at_once_and_open_sessions_go_on() {
    let s = Server::start_with_config("[auth]\nfailure_delay_ms = 0\ncache_ttl_secs = 300\n");
    s.add_user(JOHN);
    deliver(&s, JOHN, &message("kept"));
    // Cached by this login.
    let (r, _) = attempt(&s, JOHN, PASSWORD);
    assert!(r.starts_with("+OK"));
    let mut open = Pop3::login(s.pop3, JOHN);
    let out = s.cli(&["user", "passwd", JOHN, "--password", "new secret"]);
    assert!(out.status.success());
    // The open session was authorised at login and goes on to its QUIT.
    assert!(open.cmd("STAT").starts_with("+OK 1 "));
    assert!(open.cmd("QUIT").starts_with("+OK"));
    let (r, _) = attempt(&s, JOHN, PASSWORD);
    assert!(
        r.starts_with("-ERR [AUTH]"),
        "old password still accepted (cache not invalidated): {r}"
    );
    let (r, _) = attempt(&s, JOHN, "new secret");
    assert!(r.starts_with("+OK"), "{r}");
}

/// A POP3 connection whose PROXY v1 header says it comes from `client`.
fn connect_as(server: &Server, client: &str) -> Pop3 {
    let mut raw = TcpStream::connect(server.pop3).expect("connect");
    let local = raw.local_addr().expect("addr");
    write!(
        raw,
        "PROXY TCP4 {client} {} 40000 {}\r\n",
        local.ip(),
        server.pop3.port()
    )
    .expect("header");
    Pop3::from_stream(raw)
}

#[test]
fn cleartext_logins_only_from_trusted_networks() {
    let s = Server::start_with_config(
        "[proxy]\ntrusted_networks = [\"127.0.0.1/32\"]\n[pop3]\nproxy_protocol = true\n\
         [auth]\nfailure_delay_ms = 0\ncleartext_networks = [\"198.51.100.0/24\"]\n",
    );
    s.add_user(JOHN);
    let mut far = connect_as(&s, "203.0.113.9");
    assert!(far.cmd("CAPA").starts_with("+OK"));
    let caps = far.multi();
    assert!(
        !caps.iter().any(|c| c == "USER"),
        "USER offered in the clear: {caps:?}"
    );
    assert!(caps.iter().any(|c| c == "STLS"), "{caps:?}");
    let sasl = caps
        .iter()
        .find(|c| c.starts_with("SASL"))
        .expect("SASL line");
    assert!(!sasl.contains("PLAIN") && !sasl.contains("LOGIN"), "{sasl}");
    assert!(
        sasl.contains("SCRAM-SHA-256"),
        "SCRAM sends no password: {sasl}"
    );
    let r = far.cmd(&format!("USER {JOHN}"));
    assert!(r.starts_with("-ERR"), "{r}");
    let r = far.cmd("AUTH PLAIN AGpvaG5AZXhhbXBsZS5jb20AczNjcmV0IHBhc3M=");
    assert!(
        r.starts_with("-ERR") && !r.contains("[AUTH]"),
        "refused before any check: {r}"
    );
    assert!(far.cmd("AUTH LOGIN").starts_with("-ERR"));
    assert!(!far.capa().is_empty());

    let mut near = connect_as(&s, "198.51.100.20");
    assert!(near.cmd("CAPA").starts_with("+OK"));
    assert!(near.multi().iter().any(|c| c == "USER"));
    assert!(near.cmd(&format!("USER {JOHN}")).starts_with("+OK"));
    assert!(near.cmd(&format!("PASS {PASSWORD}")).starts_with("+OK"));
}

/// Unknown and known users answer alike and take the same time. Reports the medians.
#[test]
fn unknown_and_known_users_cost_the_same() {
    let s = Server::start_with_config(
        "[auth]\nfailure_delay_ms = 0\nip_penalty_max_secs = 0\naccount_failures_per_hour = 100000\n",
    );
    s.add_user(JOHN);
    let samples = 200;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let (r1, t1) = attempt(&s, JOHN, "wrong password");
        let (r2, t2) = attempt(&s, "ghost@example.com", "wrong password");
        assert_eq!(r1, r2);
        known.push(t1);
        unknown.push(t2);
    }
    known.sort();
    unknown.sort();
    let (k, u) = (
        known[samples / 2].as_secs_f64(),
        unknown[samples / 2].as_secs_f64(),
    );
    let diff = (k - u).abs() / k.max(u);
    eprintln!(
        "failed PASS median over {samples} samples each: known user {:.2} ms, unknown user {:.2} ms ({:.1}% apart)",
        k * 1e3,
        u * 1e3,
        diff * 1e2
    );
    assert!(diff < 0.25, "medians {k} vs {u}");
}

//! kill -9 of the server during DATA and during QUIT, repeated: no acknowledged message is lost
//! or duplicated, a QUIT is applied whole or not at all, and a restarted server frees the
//! maildrop locks its predecessor held at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

const JOHN: &str = "john@example.com";

/// Subjects of every message in the maildrop, each with how often it appears.
fn subjects(server: &Server) -> HashMap<String, usize> {
    let mut c = Pop3::login(server.pop3, JOHN);
    let (count, _) = c.stat();
    let mut seen = HashMap::new();
    for n in 1..=count {
        let (_, body) = c.fetch(&format!("RETR {n}"));
        let text = String::from_utf8_lossy(&body).to_string();
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .expect("subject")
            .to_string();
        assert!(
            body.ends_with(&big_message(&subject)),
            "message {subject} is not complete"
        );
        *seen.entry(subject).or_insert(0) += 1;
    }
    c.cmd("QUIT");
    seen
}

fn count(server: &Server) -> usize {
    let mut c = Pop3::login(server.pop3, JOHN);
    let (n, _) = c.stat();
    c.cmd("QUIT");
    n
}

/// A message large enough (~300 KB, several store chunks) that a kill often lands mid-DATA.
fn big_message(subject: &str) -> Vec<u8> {
    let mut m = format!("Subject: {subject}\r\n\r\n").into_bytes();
    for i in 0..6000 {
        m.extend_from_slice(
            format!("{subject} line {i:05} .............................\r\n").as_bytes(),
        );
    }
    m
}

#[test]
fn kill_during_data_loses_no_acknowledged_message() {
    let mut server = Server::start();
    server.add_user(JOHN);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    for round in 0..4u64 {
        let lmtp = server.lmtp;
        let sink = acked.clone();
        let sender = std::thread::spawn(move || {
            for i in 0.. {
                let subject = format!("r{round}m{i}");
                let result = Lmtp::try_connect(lmtp).and_then(|mut c| {
                    c.try_deliver("a@b.example", &[JOHN], &big_message(&subject))
                });
                match result {
                    Ok(replies) if replies[0].starts_with("250") => {
                        sink.lock().expect("acked").push(subject)
                    }
                    _ => return,
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300 + 170 * round));
        let data = server.kill9();
        let _ = sender.join();
        server = Server::restart(data);
    }
    let seen = subjects(&server);
    let acked = acked.lock().expect("acked");
    assert!(!acked.is_empty(), "no delivery finished before the kills");
    for s in acked.iter() {
        assert_eq!(
            seen.get(s),
            Some(&1),
            "acknowledged message {s} lost or duplicated"
        );
    }
    for (s, n) in &seen {
        assert_eq!(*n, 1, "{s} stored {n} times");
    }
    assert_eq!(
        server
            .data()
            .sql("SELECT count(*) FROM blobs WHERE pending_node IS NOT NULL"),
        "0",
        "half-written bodies left behind"
    );
    eprintln!(
        "acknowledged {} messages across 4 kills; {} stored",
        acked.len(),
        seen.len()
    );
}

#[test]
fn kill_during_quit_applies_update_whole_or_not_at_all() {
    let mut server = Server::start();
    server.add_user(JOHN);
    let mut outcomes = Vec::new();
    // Kill delays after QUIT: the early ones land before the commit, the late ones after it.
    for (round, delay_us) in [0u64, 0, 500, 1000, 2000, 3000, 5000, 8000, 50_000]
        .into_iter()
        .enumerate()
    {
        // Refill to 60 messages over one LMTP connection.
        let have = count(&server);
        let mut c = Lmtp::connect(server.lmtp);
        for i in have..60 {
            let replies = c.deliver("a@b.example", &[JOHN], &message(&format!("q{round}m{i}")));
            assert!(replies[0].starts_with("250"), "{replies:?}");
        }
        drop(c);
        let before = count(&server);
        let mut p = Pop3::login(server.pop3, JOHN);
        let mut batch = String::new();
        for n in 1..=before {
            batch.push_str(&format!("DELE {n}\r\n"));
        }
        p.send_raw(batch.as_bytes());
        for _ in 0..before {
            assert!(p.line().starts_with("+OK"));
        }
        p.send("QUIT");
        std::thread::sleep(Duration::from_micros(delay_us));
        let data = server.kill9();
        let answered = p.try_line();
        // A restarted server frees the dead run's lock at once: the mailbox is usable right away.
        let restarted = Instant::now();
        server = Server::restart(data);
        let after = count(&server);
        let ready = restarted.elapsed();
        assert!(
            ready < Duration::from_secs(3),
            "mailbox usable {ready:?} after restart"
        );
        assert!(
            after == before || after == 0,
            "QUIT half-applied: {before} -> {after}"
        );
        if answered.as_deref().is_some_and(|r| r.starts_with("+OK")) {
            assert_eq!(
                after, 0,
                "+OK was sent, so the deletion must have been committed"
            );
        }
        outcomes.push((answered.is_some(), after));
    }
    eprintln!("(QUIT answered, messages left) per round: {outcomes:?}");
}

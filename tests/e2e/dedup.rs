//! No duplicates from MTA retries (issue 21, item 2): the same message (Message-ID, envelope
//! sender, data) delivered again to a mailbox within `lmtp.dedup_window_secs` is answered 250
//! and stored once, per recipient, counted in `/metrics`; and kill -9 during DATA, with every
//! unacknowledged message re-sent after the restart as an MTA would, leaves each message exactly
//! once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::ops::{get, scrape};

const JOHN: &str = "john@example.com";
const JANE: &str = "jane@example.com";
const DEDUPLICATED: &str = "pophost_lmtp_deduplicated_total";

fn with_id(subject: &str) -> Vec<u8> {
    format!(
        "From: a@example.net\r\nMessage-ID: <{subject}@example.net>\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"
    )
    .into_bytes()
}

fn stat(server: &Server, user: &str) -> usize {
    let mut c = Pop3::login(server.pop3, user);
    let (n, _) = c.stat();
    c.cmd("QUIT");
    n
}

fn one(server: &Server, from: &str, rcpts: &[&str], message: &[u8]) -> Vec<String> {
    let replies = Lmtp::connect(server.lmtp).deliver(from, rcpts, message);
    assert_eq!(replies.len(), rcpts.len(), "{replies:?}");
    replies
}

#[test]
fn an_mta_retry_is_answered_250_and_stored_once() {
    let server = Server::start();
    server.add_user(JOHN);
    server.add_user(JANE);
    let m = with_id("retry");
    assert_eq!(get(&scrape(&server), DEDUPLICATED), 0.0);

    let first = one(&server, "a@example.net", &[JOHN], &m);
    assert!(first[0].starts_with("250 2.0.0"), "{first:?}");
    // What Postfix does when the 250 was lost: the same transaction again.
    let retry = one(&server, "a@example.net", &[JOHN], &m);
    assert!(retry[0].starts_with("250 2.0.0"), "{retry:?}");
    assert_eq!(stat(&server, JOHN), 1);
    assert_eq!(get(&scrape(&server), DEDUPLICATED), 1.0);

    // Per recipient: jane never got it, john did.
    let both = one(&server, "a@example.net", &[JOHN, JANE], &m);
    assert!(both.iter().all(|r| r.starts_with("250 2.0.0")), "{both:?}");
    assert_eq!((stat(&server, JOHN), stat(&server, JANE)), (1, 1));
    assert_eq!(get(&scrape(&server), DEDUPLICATED), 2.0);

    // Another envelope sender, another body, or no Message-ID: different mail.
    one(&server, "other@example.net", &[JOHN], &m);
    one(
        &server,
        "a@example.net",
        &[JOHN],
        &[&m[..], b"more\r\n"].concat(),
    );
    for _ in 0..2 {
        one(&server, "a@example.net", &[JOHN], &message("no id"));
    }
    assert_eq!(stat(&server, JOHN), 5);
    assert_eq!(get(&scrape(&server), DEDUPLICATED), 2.0);
}

#[test]
fn a_250_lost_with_the_connection_is_retried_into_one_copy() {
    let server = Server::start();
    server.add_user(JOHN);
    let m = with_id("lost-250");
    // The MTA sends the data and the connection dies before it reads the reply.
    let stream = std::net::TcpStream::connect(server.lmtp).expect("connect");
    let mut rd = std::io::BufReader::new(stream.try_clone().expect("clone"));
    let mut wr = stream;
    let reply = |rd: &mut std::io::BufReader<std::net::TcpStream>| loop {
        let mut line = String::new();
        rd.read_line(&mut line).expect("reply");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line;
        }
    };
    assert!(reply(&mut rd).starts_with("220"));
    for (command, expect) in [
        ("LHLO mta.example", "250"),
        ("MAIL FROM:<a@example.net>", "250"),
        ("RCPT TO:<john@example.com>", "250"),
        ("DATA", "354"),
    ] {
        wr.write_all(format!("{command}\r\n").as_bytes())
            .expect("write");
        let r = reply(&mut rd);
        assert!(r.starts_with(expect), "{command}: {r}");
    }
    wr.write_all(&stuff(&m)).expect("data");
    drop((rd, wr));
    // Its retry, possibly while the first delivery is still committing: one copy either way.
    let retry = one(&server, "a@example.net", &[JOHN], &m);
    assert!(retry[0].starts_with("250 2.0.0"), "{retry:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&scrape(&server), DEDUPLICATED) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the first delivery never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stat(&server, JOHN), 1);
    assert_eq!(get(&scrape(&server), DEDUPLICATED), 1.0);
}

#[test]
fn a_zero_window_turns_deduplication_off() {
    let server = Server::start_with_config("[lmtp]\ndedup_window_secs = 0\n");
    server.add_user(JOHN);
    let m = with_id("off");
    for _ in 0..2 {
        one(&server, "a@example.net", &[JOHN], &m);
    }
    assert_eq!(stat(&server, JOHN), 2);
    assert_eq!(get(&scrape(&server), DEDUPLICATED), 0.0);
}

/// A message of ~300 KB (several store chunks, so a kill often lands mid-DATA) with a
/// Message-ID of its own.
fn big(subject: &str) -> Vec<u8> {
    let mut m = with_id(subject);
    for i in 0..6000 {
        m.extend_from_slice(format!("{subject} line {i:05} ......................\r\n").as_bytes());
    }
    m
}

/// What the MTA knows: messages it must (re)send, which were acknowledged, and how many of its
/// retries the server answered "Already delivered" (the kill fell between the commit and the 250).
#[derive(Default)]
struct Mta {
    queue: VecDeque<String>,
    acked: HashSet<String>,
    next: usize,
    retries_already_delivered: usize,
    retries: usize,
}

/// One sending connection: takes the next queued message (a retry) or a new one, until the
/// server dies or `new_limit` messages were made.
fn send_until_failure(lmtp: std::net::SocketAddr, mta: &Mutex<Mta>, new_limit: usize) {
    loop {
        let (subject, retry) = {
            let mut mta = mta.lock().expect("mta");
            match mta.queue.pop_front() {
                Some(s) => (s, true),
                None if mta.next < new_limit => {
                    mta.next += 1;
                    (format!("k{}", mta.next), false)
                }
                None => return,
            }
        };
        let reply = Lmtp::try_connect(lmtp)
            .and_then(|mut c| c.try_deliver("a@example.net", &[JOHN], &big(&subject)));
        let mut mta = mta.lock().expect("mta");
        match reply {
            Ok(r) if r[0].starts_with("250") => {
                if retry {
                    mta.retries += 1;
                    if r[0].contains("Already delivered") {
                        mta.retries_already_delivered += 1;
                    }
                }
                mta.acked.insert(subject);
            }
            _ => {
                mta.queue.push_back(subject);
                return;
            }
        }
    }
}

#[test]
fn kill_during_data_then_retries_leave_every_message_once() {
    let mut server = Server::start();
    server.add_user(JOHN);
    let mta = Arc::new(Mutex::new(Mta::default()));
    const KILLS: u64 = 6;
    for round in 0..KILLS {
        // Several connections at once, so that a kill finds deliveries at every stage.
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let (lmtp, mta) = (server.lmtp, mta.clone());
                std::thread::spawn(move || send_until_failure(lmtp, &mta, usize::MAX))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 130 * round));
        let data = server.kill9();
        for s in senders {
            let _ = s.join();
        }
        server = Server::restart(data);
    }
    // The MTA's queue drains into the last server.
    let made = mta.lock().expect("mta").next;
    send_until_failure(server.lmtp, &mta, made);
    let mta = mta.lock().expect("mta");
    assert!(mta.queue.is_empty(), "left unsent: {:?}", mta.queue);
    assert_eq!(mta.acked.len(), made);

    let mut seen = HashMap::<String, usize>::new();
    let mut c = Pop3::login(server.pop3, JOHN);
    let (count, _) = c.stat();
    for n in 1..=count {
        let (_, body) = c.fetch(&format!("RETR {n}"));
        let text = String::from_utf8_lossy(&body).to_string();
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .expect("subject")
            .to_string();
        assert!(body.ends_with(&big(&subject)), "{subject} is not complete");
        *seen.entry(subject).or_default() += 1;
    }
    c.cmd("QUIT");
    for s in &mta.acked {
        assert_eq!(seen.get(s), Some(&1), "{s} lost or duplicated");
    }
    assert_eq!(seen.len(), made, "stored messages nobody sent");
    eprintln!(
        "{made} messages over {KILLS} kills; {} retries, {} of them answered \"Already delivered\" \
         (the kill fell between commit and acknowledgement)",
        mta.retries, mta.retries_already_delivered
    );
}

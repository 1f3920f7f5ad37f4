//! A 50 MB message delivered over LMTP comes back byte-exact from RETR, and the server's
//! resident memory grows by less than 32 MB while it does (peak RSS, reset before the transfer).

use crate::harness::*;

const JOHN: &str = "john@example.com";
/// 50 MB; the default size limit is 50 MiB (52428800), which the delivery headers must fit under too.
const SIZE: usize = 50_000_000;

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("field")
}

/// Resets the kernel's peak-RSS mark for `pid`, so VmHWM afterwards is this transfer's peak.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
}

/// Deterministic 50 MB of mail text: long and short lines, some starting with '.', some with
/// bare LF (stored as CRLF), so stuffing and normalisation are exercised at every chunk boundary.
fn fifty_megabytes() -> (Vec<u8>, Vec<u8>) {
    let mut wire = b"Subject: big\r\n\r\n".to_vec();
    let mut stored = wire.clone();
    let mut i = 0u64;
    while stored.len() < SIZE {
        // Stretches of lines that need dot-stuffing and stretches without any (a few MB each),
        // so RETR sends parts both ways: stuffed, and passed through as stored.
        let line = match i % 7 {
            0 if (i / 20_000).is_multiple_of(2) => format!(".dot line {i}"),
            0 => format!("no dot line {i}"),
            1 => "x".repeat((i % 3000) as usize),
            _ => format!("line {i} {}", "abcdefghij".repeat((i % 13) as usize)),
        };
        wire.extend_from_slice(line.as_bytes());
        stored.extend_from_slice(line.as_bytes());
        if i.is_multiple_of(11) {
            wire.push(b'\n');
        } else {
            wire.extend_from_slice(b"\r\n");
        }
        stored.extend_from_slice(b"\r\n");
        i += 1;
    }
    (wire, stored)
}

#[test]
fn fifty_megabytes_round_trip_in_bounded_memory() {
    let s = Server::start();
    s.add_user(JOHN);
    let (wire, stored) = fifty_megabytes();
    let pid = s.pid();
    let baseline = proc_status_kb(pid, "VmRSS:");
    reset_peak(pid);

    let replies = Lmtp::connect(s.lmtp).deliver("a@b.example", &[JOHN], &wire);
    assert!(replies[0].starts_with("250 2.0.0"), "{replies:?}");
    let after_delivery = proc_status_kb(pid, "VmHWM:");

    // Logged in before the peak is reset: the login's argon2 verification takes ~19 MiB
    // (bounded by auth.max_concurrent_hashes), which is not the transfer's memory.
    let mut p = Pop3::login(s.pop3, JOHN);
    let logged_in = proc_status_kb(pid, "VmRSS:");
    reset_peak(pid);
    let (status, body) = p.fetch("RETR 1");
    let after_retr = proc_status_kb(pid, "VmHWM:");
    assert_eq!(status, format!("+OK {} octets", body.len()));
    assert!(body.ends_with(&stored), "RETR is not byte-exact");
    assert_eq!(
        body.len() - stored.len(),
        body.windows(4).position(|w| w == b"Subj").expect("subject")
    );

    let growth =
        (after_delivery.saturating_sub(baseline)).max(after_retr.saturating_sub(logged_in));
    eprintln!(
        "50 MB message: RSS before LMTP {baseline} kB, peak during LMTP {after_delivery} kB; after login {logged_in} kB, peak during RETR {after_retr} kB; largest growth {growth} kB"
    );
    assert!(growth < 32 * 1024, "server RSS grew by {growth} kB");
}

/// A body part gone from the store (a damaged database, a bug) must not reach the client as a
/// whole message: RETR and TOP drop the connection instead of ending the reply with ".", and the
/// message stays in the maildrop (no UPDATE), for the client to try again.
#[test]
fn a_missing_body_part_drops_the_connection_instead_of_a_cut_message() {
    let s = Server::start();
    s.add_user(JOHN);
    let mut message = b"Subject: parts\r\n\r\n".to_vec();
    while message.len() < 3 << 20 {
        message.extend_from_slice(b"some text of a long message, over many 128 KiB parts\r\n");
    }
    deliver(&s, JOHN, &message);
    let mut p = Pop3::login(s.pop3, JOHN);
    let (status, body) = p.fetch("RETR 1");
    assert!(status.starts_with("+OK"), "{status}");
    assert!(body.ends_with(&message), "whole while every part is there");
    assert!(p.cmd("QUIT").starts_with("+OK"));

    // Part 4 of ~24: the RETR reads ahead past it; TOP with many lines reads through it.
    s.data().sql("DELETE FROM blob_chunks WHERE seq = 3");
    for command in ["RETR 1", "TOP 1 1000000"] {
        let mut p = Pop3::login(s.pop3, JOHN);
        assert!(p.cmd(command).starts_with("+OK"));
        let sent = p.read_to_end();
        assert!(
            !sent.ends_with(b"\r\n.\r\n"),
            "{command}: a cut message was ended as if whole ({} octets)",
            sent.len()
        );
        assert!(
            sent.len() < message.len(),
            "{command}: {} octets",
            sent.len()
        );
    }
    let mut p = Pop3::login(s.pop3, JOHN);
    assert_eq!(p.stat().0, 1, "the message is still there");
}

/// Issue 16 (1): after login, a client that pipelines 800 listings in one write and never reads
/// holds the session's output budget, not 800 listings of a 20,000-message maildrop (which
/// grew the server by 273 MiB). UIDL and LIST alike; a client that does read gets each listing
/// whole.
#[test]
fn pipelined_listings_that_are_never_read_hold_bounded_memory() {
    const MESSAGES: usize = 20_000;
    let s = Server::start();
    s.add_user(JOHN);
    import_messages(&s, JOHN, MESSAGES);
    let pid = s.pid();

    let mut reader = Pop3::login(s.pop3, JOHN);
    reader.send_raw(b"UIDL\r\nLIST\r\nUIDL\r\n");
    for _ in 0..3 {
        assert!(reader.line().starts_with("+OK"));
        let lines = reader.multi();
        assert_eq!(lines.len(), MESSAGES);
        assert!(lines[MESSAGES - 1].starts_with(&format!("{MESSAGES} ")));
    }
    assert!(reader.cmd("QUIT").starts_with("+OK"));

    for command in ["UIDL", "LIST"] {
        let mut c = login_when_free(&s);
        let before = proc_status_kb(pid, "VmRSS:");
        reset_peak(pid);
        c.send_raw(format!("{command}\r\n").repeat(800).as_bytes());
        // The server writes until the socket buffers are full, then must stop: wait until its
        // memory stops moving.
        let mut last = 0;
        for _ in 0..20 {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let now = proc_status_kb(pid, "VmHWM:");
            if now == last {
                break;
            }
            last = now;
        }
        let growth = last.saturating_sub(before);
        eprintln!(
            "800 pipelined {command}s, never read: RSS {before} kB, peak {last} kB, growth {growth} kB"
        );
        assert!(
            growth < 16 * 1024,
            "{command}: server RSS grew by {growth} kB"
        );
        drop(c);
    }
}

/// Logs in, retrying while the previous session's lock is still being given back.
fn login_when_free(s: &Server) -> Pop3 {
    for _ in 0..100 {
        let mut c = Pop3::connect(s.pop3);
        c.cmd(&format!("USER {JOHN}"));
        let r = c.cmd(&format!("PASS {PASSWORD}"));
        if r.starts_with("+OK") {
            return c;
        }
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("maildrop stayed locked");
}

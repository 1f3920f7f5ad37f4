//! LMTP delivery (RFC 2033): per-recipient replies, unknown users, quotas, the size limit,
//! delivery headers, single-instance storage, pipelining, and no SMTP smuggling.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::*;

const JOHN: &str = "john@example.com";
const JANE: &str = "jane@example.com";

fn count_rows(server: &Server, sql: &str) -> i64 {
    server.data().sql(sql).parse().expect("number")
}

fn usage(server: &Server, domain: &str) -> String {
    let out = server.cli(&["user", "list", domain]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn lhlo_and_command_sequence() {
    let s = Server::start();
    let mut c = Lmtp::connect(s.lmtp);
    assert!(c.cmd("EHLO x").starts_with("500 5.5.1"), "EHLO is not LMTP");
    assert!(c.cmd("MAIL FROM:<a@b>").starts_with("503 5.5.1"));
    let caps = c.cmd("LHLO client.example");
    for cap in [
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 52428800",
    ] {
        assert!(
            caps.lines().any(|l| l[4..] == *cap),
            "{cap} missing: {caps}"
        );
    }
    assert!(c.cmd("RCPT TO:<a@b>").starts_with("503 5.5.1"));
    assert!(c.cmd("DATA").starts_with("503"));
    assert!(c.cmd("FOO").starts_with("500 5.5.2"));
    assert!(c.cmd("NOOP").starts_with("250 2.0.0"));
    assert!(
        c.cmd("MAIL FROM:<a@b> SIZE=60000000")
            .starts_with("552 5.3.4")
    );
    assert!(
        c.cmd("MAIL FROM:<a@b> BODY=8BITMIME")
            .starts_with("250 2.1.0")
    );
    assert!(
        c.cmd("MAIL FROM:<a@b>").starts_with("503 5.5.1"),
        "nested MAIL"
    );
    assert!(c.cmd("DATA").starts_with("554"), "DATA without recipients");
    assert!(c.cmd("RSET").starts_with("250"));
    assert!(
        c.cmd(&format!("LHLO {}", "x".repeat(3000)))
            .starts_with("500 5.5.2")
    );
    assert!(c.cmd("QUIT").starts_with("221 2.0.0"));
}

#[test]
fn one_reply_per_accepted_recipient_and_headers_added() {
    let s = Server::start();
    s.add_user(JOHN);
    s.add_user(JANE);
    let mut c = Lmtp::connect(s.lmtp);
    assert!(c.cmd("LHLO mta.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<sender@example.net>").starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{JOHN}>")).starts_with("250 2.1.5"));
    assert!(
        c.cmd("RCPT TO:<ghost@example.com>")
            .starts_with("550 5.1.1")
    );
    assert!(
        c.cmd("RCPT TO:<john@nowhere.example>")
            .starts_with("550 5.1.1")
    );
    assert!(c.cmd("RCPT TO:<Jane@EXAMPLE.com>").starts_with("250 2.1.5"));
    assert!(c.cmd("DATA").starts_with("354"));
    let msg = message("two recipients");
    c.send_raw(&stuff(&msg));
    let r1 = c.reply();
    let r2 = c.reply();
    assert!(r1.starts_with("250 2.0.0") && r1.contains(JOHN), "{r1}");
    assert!(r2.starts_with("250 2.0.0") && r2.contains(JANE), "{r2}");
    assert!(
        c.cmd("NOOP").starts_with("250"),
        "exactly one reply per accepted recipient"
    );

    for user in [JOHN, JANE] {
        let mut p = Pop3::login(s.pop3, user);
        let (status, body) = p.fetch("RETR 1");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("Return-Path: <sender@example.net>\r\nDelivered-To: {user}\r\nReceived: from mta.example")), "{text}");
        assert!(body.ends_with(&msg));
        assert_eq!(
            status,
            format!("+OK {} octets", body.len()),
            "headers are part of the size"
        );
    }
    // One body for both recipients.
    assert_eq!(count_rows(&s, "SELECT count(*) FROM blobs"), 1);
    assert_eq!(count_rows(&s, "SELECT refs FROM blobs"), 2);
}

#[test]
fn quotas_refuse_with_552_5_2_2_and_usage_stays_exact() {
    let s = Server::start();
    s.add_user(JOHN);
    s.add_user(JANE);
    assert!(
        s.cli(&["user", "set", JOHN, "--quota-messages", "1"])
            .status
            .success()
    );
    deliver(&s, JOHN, &message("one"));
    // A full mailbox is refused at RCPT already; the other recipient still gets the message.
    let mut c = Lmtp::connect(s.lmtp);
    assert!(c.cmd("LHLO mta.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@b.example>").starts_with("250"));
    let full = c.cmd(&format!("RCPT TO:<{JOHN}>"));
    assert!(full.starts_with("552 5.2.2"), "{full}");
    assert!(c.cmd(&format!("RCPT TO:<{JANE}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(&stuff(&message("two")));
    let replies = vec![c.reply()];
    assert!(replies[0].starts_with("250 2.0.0"), "{replies:?}");

    // Domain byte quota: the next message would not fit.
    let listing = usage(&s, "example.com");
    assert!(
        listing.contains(&format!("{JOHN} messages=1 ")),
        "{listing}"
    );
    assert!(
        s.cli(&["user", "set", JOHN, "--quota-messages", "unlimited"])
            .status
            .success()
    );
    assert!(
        s.cli(&["domain", "set", "example.com", "--quota-bytes", "1000"])
            .status
            .success()
    );
    let replies = Lmtp::connect(s.lmtp).deliver("a@b.example", &[JOHN], &vec![b'x'; 800]);
    assert!(replies[0].starts_with("552 5.2.2"), "{replies:?}");

    // Deleting mail frees quota: counters move in the UPDATE transaction.
    let mut p = Pop3::login(s.pop3, JOHN);
    let (_, size) = p.stat();
    p.cmd("DELE 1");
    assert!(p.cmd("QUIT").starts_with("+OK"));
    let listing = usage(&s, "example.com");
    assert!(
        listing.contains(&format!("{JOHN} messages=0 bytes=0 ")),
        "{listing}"
    );
    let domains = String::from_utf8_lossy(&s.cli(&["domain", "list"]).stdout).to_string();
    assert!(domains.contains("users=2 messages=1 "), "{domains}");
    assert!(size > 0);
}

#[test]
fn over_size_limit_is_552_5_3_4_and_nothing_is_stored() {
    let s = Server::start_with_config("[lmtp]\nmax_message_size = 10000\n");
    s.add_user(JOHN);
    let mut c = Lmtp::connect(s.lmtp);
    let big: Vec<u8> = (0..400)
        .flat_map(|i| format!("line {i:04} of a message that is too big\r\n").into_bytes())
        .collect();
    let replies = c.deliver("a@b.example", &[JOHN], &big);
    assert!(replies[0].starts_with("552 5.3.4"), "{replies:?}");
    assert!(
        c.cmd("NOOP").starts_with("250"),
        "the session stays in sync after the refused DATA"
    );
    assert!(c.cmd("RSET").starts_with("250"));
    let replies = c.deliver("a@b.example", &[JOHN], &message("fits"));
    assert!(replies[0].starts_with("250"), "{replies:?}");
    let mut p = Pop3::login(s.pop3, JOHN);
    assert!(p.cmd("STAT").starts_with("+OK 1 "));
    assert_eq!(
        count_rows(&s, "SELECT count(*) FROM blobs"),
        1,
        "the refused body was dropped"
    );
}

#[test]
fn pipelined_transactions_are_answered_in_order() {
    let s = Server::start();
    s.add_user(JOHN);
    let mut c = Lmtp::connect(s.lmtp);
    let mut batch = b"LHLO p.example\r\n".to_vec();
    for i in 0..3 {
        batch.extend_from_slice(format!("MAIL FROM:<a@b.example>\r\nRCPT TO:<{JOHN}>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n").as_bytes());
        batch.extend_from_slice(&stuff(&message(&format!("p{i}"))));
    }
    batch.extend_from_slice(b"QUIT\r\n");
    c.send_raw(&batch);
    assert!(c.reply().starts_with("250-"));
    for _ in 0..3 {
        assert!(c.reply().starts_with("250 2.1.0"));
        assert!(c.reply().starts_with("250 2.1.5"));
        assert!(c.reply().starts_with("550 5.1.1"));
        assert!(c.reply().starts_with("354"));
        assert!(c.reply().starts_with("250 2.0.0"));
    }
    assert!(c.reply().starts_with("221"));
    let mut p = Pop3::login(s.pop3, JOHN);
    assert!(p.cmd("STAT").starts_with("+OK 3 "));
    let (_, body) = p.fetch("RETR 2");
    assert!(String::from_utf8_lossy(&body).contains("Subject: p1\r\n"));
}

/// Would-be ends of DATA that are not `CRLF . CRLF`, each with what it leaves in the stored body.
const SMUGGLING: &[(&str, &[u8], &[u8])] = &[
    ("LF . LF", b"\n.\n", b"\r\n.\r\n"),
    ("CRLF . LF", b"\r\n.\n", b"\r\n.\r\n"),
    ("LF . CRLF", b"\n.\r\n", b"\r\n.\r\n"),
    ("CR . CR", b"\r.\r", b"\r.\r"),
    ("CRLF . CR CRLF", b"\r\n.\r\r\n", b"\r\n\r\r\n"),
];

/// The DATA section of a message whose body, to a server that took `sep` for the end of DATA,
/// goes on as a second transaction for `rcpt` from a forged sender. Returns the bytes to send
/// after 354 and the message body as it should be stored.
fn smuggling(rcpt: &str, sep: &[u8], stored_sep: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let head = b"From: a@example.net\r\nSubject: first\r\n\r\nhello".as_slice();
    let second = format!(
        "MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\nFrom: ceo@bank.example\r\nSubject: forged\r\n\r\nsend money\r\n"
    );
    let wire = [head, sep, second.as_bytes(), b".\r\n"].concat();
    let stored = [head, stored_sep, second.as_bytes()].concat();
    (wire, stored)
}

#[test]
fn only_crlf_dot_crlf_ends_data_so_no_second_message_is_smuggled() {
    let s = Server::start();
    for (i, (name, sep, stored_sep)) in SMUGGLING.iter().enumerate() {
        let user = format!("victim{i}@example.com");
        s.add_user(&user);
        let (wire, stored) = smuggling(&user, sep, stored_sep);
        let mut c = Lmtp::connect(s.lmtp);
        assert!(c.cmd("LHLO mta.example").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<sender@example.net>").starts_with("250"));
        assert!(c.cmd(&format!("RCPT TO:<{user}>")).starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send_raw(&wire);
        let delivered = c.reply();
        assert!(delivered.starts_with("250 2.0.0"), "{name}: {delivered}");
        assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK", "{name}: replies out of step");
        assert!(c.cmd("QUIT").starts_with("221"));

        // RETR sends the whole message, the stored "." line stuffed, and stays in step too.
        let mut p = Pop3::login(s.pop3, &user);
        assert_eq!(p.stat().0, 1, "{name}: exactly one message");
        p.send("RETR 1");
        let status = p.line();
        let raw = p.multi_raw();
        let body = unstuff(&raw);
        assert_eq!(status, format!("+OK {} octets", body.len()), "{name}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.starts_with("Return-Path: <sender@example.net>\r\n"),
            "{name}: {text:?}"
        );
        assert!(body.ends_with(&stored), "{name}: {text:?}");
        if stored_sep == b"\r\n.\r\n" {
            assert!(
                raw.windows(8).any(|w| w == b"\r\n..\r\nMA"),
                "{name}: the '.' line is not stuffed on the wire"
            );
        }
        assert!(p.cmd("NOOP").starts_with("+OK"), "{name}: RETR out of step");
    }
}

/// The smuggling payloads written one byte per TCP segment, commands ending in bare LF (which
/// LMTP accepts for command lines): every terminator is split at every byte.
#[test]
fn smuggling_dribbled_one_byte_at_a_time_is_one_message() {
    let s = Server::start();
    s.add_user(JOHN);
    let mut session = b"LHLO dribble.example\n".to_vec();
    for (_, sep, stored_sep) in &SMUGGLING[..3] {
        session.extend_from_slice(
            format!("MAIL FROM:<sender@example.net>\nRCPT TO:<{JOHN}>\nDATA\n").as_bytes(),
        );
        session.extend_from_slice(&smuggling(JOHN, sep, stored_sep).0);
    }
    session.extend_from_slice(b"QUIT\r\n");
    let mut stream = TcpStream::connect(s.lmtp).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    for b in &session {
        stream.write_all(std::slice::from_ref(b)).expect("write");
        std::thread::sleep(Duration::from_micros(100));
    }
    let mut replies = String::new();
    stream.read_to_string(&mut replies).expect("replies");
    let lines: Vec<&str> = replies.lines().collect();
    // The greeting and LHLO's six lines, then three transactions and QUIT, nothing more.
    assert_eq!(lines.len(), 7 + 3 * 4 + 1, "{replies}");
    for t in lines[7..19].chunks(4) {
        assert_eq!(
            t,
            [
                "250 2.1.0 Sender OK",
                "250 2.1.5 Recipient OK",
                "354 2.0.0 End data with <CR><LF>.<CR><LF>",
                &format!("250 2.0.0 <{JOHN}> Delivered"),
            ],
            "{replies}"
        );
    }
    assert!(lines[19].starts_with("221"), "{replies}");
    let mut p = Pop3::login(s.pop3, JOHN);
    assert_eq!(p.stat().0, 3);
    for n in 1..=3 {
        let (_, body) = p.fetch(&format!("RETR {n}"));
        assert!(body.ends_with(b"\r\n.\r\nMAIL FROM:<ceo@bank.example>\r\nRCPT TO:<john@example.com>\r\nDATA\r\nFrom: ceo@bank.example\r\nSubject: forged\r\n\r\nsend money\r\n"));
    }
}

/// A bare-LF dot early in an over-size message does not end it: the whole is refused.
#[test]
fn size_limit_counts_past_a_bare_lf_dot() {
    let s = Server::start_with_config("[lmtp]\nmax_message_size = 10000\n");
    s.add_user(JOHN);
    let mut c = Lmtp::connect(s.lmtp);
    assert!(c.cmd("LHLO mta.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@b.example>").starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{JOHN}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let mut wire = b"Subject: small\r\n\r\nsmall\n.\n".to_vec();
    for i in 0..400 {
        wire.extend_from_slice(format!("line {i:04} of a message that is too big\r\n").as_bytes());
    }
    wire.extend_from_slice(b".\r\n");
    c.send_raw(&wire);
    let reply = c.reply();
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK", "replies out of step");
    let mut p = Pop3::login(s.pop3, JOHN);
    assert_eq!(p.stat().0, 0);
    assert_eq!(count_rows(&s, "SELECT count(*) FROM blobs"), 0);
}

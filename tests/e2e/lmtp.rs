//! LMTP delivery (RFC 2033): per-recipient replies, unknown users, quotas, the size limit,
//! delivery headers, single-instance storage and pipelining.

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

//! `pophost domain generate` (issue 23, item 3): a domain of 50 users with 3 messages each,
//! loaded through the store's bulk path while the server runs, is read over POP3 like mail LMTP
//! delivered (login with the shared password, STAT, UIDL, RETR, DELE); LMTP delivers on top of
//! it; a second run extends the domain and one naming existing users adds nothing.

use std::collections::HashSet;

use crate::harness::{Lmtp, PASSWORD, Pop3, Server, message, show};

fn generate(server: &Server, args: &[&str]) -> std::process::Output {
    let mut all = vec!["domain", "generate", "gen.example", "--password-stdin"];
    all.extend_from_slice(args);
    server.cli_stdin(&all, &format!("{PASSWORD}\n"))
}

#[test]
fn generated_mailboxes_are_read_like_delivered_ones() {
    let server = Server::start();
    let out = generate(
        &server,
        &[
            "--users",
            "50",
            "--messages-per-user",
            "3",
            "--size",
            "2000",
            "--batch",
            "16",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("generated 50 users with 150 messages in gen.example"),
        "{stdout}"
    );

    let mut uids = HashSet::new();
    for n in [1, 17, 50] {
        let address = format!("user{n}@gen.example");
        let mut c = Pop3::login(server.pop3, &address);
        let (count, octets) = c.stat();
        assert_eq!(count, 3, "{address}");
        let list = c.fetch("LIST").1;
        let sizes: Vec<u64> = String::from_utf8_lossy(&list)
            .lines()
            .map(|l| l.split(' ').nth(1).expect("size").parse().expect("number"))
            .collect();
        assert_eq!(sizes.iter().sum::<u64>(), octets);
        let (status, uidl) = c.fetch("UIDL");
        assert!(status.starts_with("+OK"));
        for line in String::from_utf8_lossy(&uidl).lines() {
            let uid = line.split(' ').nth(1).expect("uid").to_string();
            assert!(uids.insert(uid), "UIDs are unique across mailboxes");
        }
        let (status, body) = c.fetch("RETR 2");
        assert!(status.starts_with("+OK"), "{status}");
        assert_eq!(body.len() as u64, sizes[1], "RETR gives LIST's size");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.starts_with("Return-Path: <newsletter@gen.example>\r\nDelivered-To: "),
            "{text}"
        );
        assert!(text.contains(&format!("Subject: Message 2 for user {n}\r\n")));
        // The body as generated: 2000 octets after the header block.
        let header_block = text.find("From: ").expect("the message's own headers");
        assert_eq!(body.len() - header_block, 2000);
        assert!(c.cmd("DELE 1").starts_with("+OK"));
        assert!(c.cmd("QUIT").starts_with("+OK"));
        let mut again = Pop3::login(server.pop3, &address);
        assert_eq!(again.stat(), (2, octets - sizes[0]));
        again.cmd("QUIT");
    }
    assert_eq!(uids.len(), 9);

    // LMTP delivers into a generated mailbox as into any other.
    let mut lmtp = Lmtp::connect(server.lmtp);
    let replies = lmtp.deliver(
        "sender@example.net",
        &["user17@gen.example"],
        &message("after generate"),
    );
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    let mut c = Pop3::login(server.pop3, "user17@gen.example");
    assert_eq!(c.stat().0, 3);
    c.cmd("QUIT");

    // A second run extends the domain; one naming existing users fails and adds nothing.
    let more = generate(&server, &["--users", "5", "--start", "51", "--size", "500"]);
    assert!(more.status.success(), "{}", show(&more));
    let mut c = Pop3::login(server.pop3, "user55@gen.example");
    assert_eq!(c.stat().0, 5);
    c.cmd("QUIT");
    let clash = generate(&server, &["--users", "5", "--start", "54", "--batch", "5"]);
    assert!(!clash.status.success(), "{}", show(&clash));
    let list = server.cli(&["user", "list", "gen.example"]);
    assert!(list.status.success(), "{}", show(&list));
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("user55@gen.example"));
    assert!(!listed.contains("user56@gen.example"), "{listed}");
}

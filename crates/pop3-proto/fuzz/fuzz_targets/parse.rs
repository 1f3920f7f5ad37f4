//! Framing and parsing of arbitrary client bytes: nothing panics, every line the buffer hands out
//! is within the RFC 2449 limit, and every error becomes one well-formed `-ERR` line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3_proto::limits::{MAX_COMMAND_LINE, MAX_REPLY_LINE};
use pop3_proto::{Command, LineBuffer, Reply, encode, parse_line};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk boundary, so the fuzzer explores splits too.
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (head, tail) = data.split_at(split);
    let mut buf = LineBuffer::new();
    for chunk in [head, tail] {
        buf.push(chunk);
        while let Some(line) = buf.next_line() {
            let Ok(line) = line else { continue };
            assert!(line.len() + 2 <= MAX_COMMAND_LINE);
            assert!(!line.contains(&b'\n'));
            match parse_line(&line) {
                Ok(command) => check(&command),
                Err(err) => {
                    let mut out = Vec::new();
                    encode(&Reply::Err(None, err.to_string()), &mut out);
                    assert!(out.len() <= MAX_REPLY_LINE);
                    assert!(out.ends_with(b"\r\n"));
                    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
                }
            }
        }
    }
    assert!(!buf.has_line());
});

fn check(command: &Command) {
    // Debug is what the server logs; it must work for every command and never show a password.
    let shown = format!("{command:?}");
    match command {
        Command::Pass(_) => assert_eq!(shown, "Pass(Password(<redacted>))"),
        Command::Auth {
            initial: Some(_), ..
        } => assert!(shown.contains("SaslResponse(<redacted>)")),
        Command::Retr(n) | Command::Dele(n) | Command::Top(n, _) => assert!(n.get() >= 1),
        Command::List(Some(n)) | Command::Uidl(Some(n)) => assert!(n.get() >= 1),
        Command::User(name) => assert!(!name.is_empty() && !name.contains([' ', '\t'])),
        Command::Apop { name, digest } => {
            assert!(!name.is_empty() && !name.contains([' ', '\t']));
            assert!(shown.ends_with("digest: ApopDigest(<redacted>) }"));
            let hex = digest.as_str();
            assert_eq!(hex.len(), 32);
            assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        }
        _ => {}
    }
}

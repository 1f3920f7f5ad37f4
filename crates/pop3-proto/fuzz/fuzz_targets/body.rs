//! BodyEncoder round-trip: any message, CRLF-normalised and fed in two chunks, comes back intact
//! after undoing dot-stuffing, with the terminator exactly once at the end; TOP is unaffected by
//! where the chunks are split.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3_proto::BodyEncoder;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let msg = normalise(rest);
    let split = usize::from(control).min(msg.len());

    let out = encode(BodyEncoder::retr(), &msg, split);
    let mut expected = msg.clone();
    if !expected.is_empty() && !expected.ends_with(b"\r\n") {
        expected.extend_from_slice(b"\r\n");
    }
    assert_eq!(unstuff(&out), expected);

    let n = u32::from(control % 8);
    let whole = encode(BodyEncoder::top(n), &msg, msg.len());
    let pieces = encode(BodyEncoder::top(n), &msg, split);
    assert_eq!(whole, pieces);
    let top = unstuff(&whole);
    assert!(expected.starts_with(&top));
});

/// Stored messages have CRLF line endings only: drop every CR and end each line with CRLF.
fn normalise(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend(line.iter().copied().filter(|&b| b != b'\r'));
    }
    out
}

fn encode(mut enc: BodyEncoder, msg: &[u8], split: usize) -> Vec<u8> {
    let (head, tail) = msg.split_at(split);
    let mut out = Vec::new();
    enc.push(head, &mut out);
    enc.push(tail, &mut out);
    enc.finish(&mut out);
    out
}

fn unstuff(wire: &[u8]) -> Vec<u8> {
    let body = wire.strip_suffix(b".\r\n").expect("terminator at the end");
    assert!(body.is_empty() || body.ends_with(b"\r\n"));
    let mut out = Vec::new();
    for line in body.split_inclusive(|&b| b == b'\n') {
        assert_ne!(line, b".\r\n", "terminator before the end");
        match line.strip_prefix(b".") {
            Some(rest) => {
                assert!(
                    rest.starts_with(b"."),
                    "line starting with an unstuffed dot"
                );
                out.extend_from_slice(rest);
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

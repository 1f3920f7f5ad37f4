//! The hot pure paths of a POP3 session, so a regression shows in review (`cargo bench -p
//! pop3-proto`): framing and parsing the commands a polling client sends, encoding a UIDL
//! listing, and streaming a stored message out through [`BodyEncoder`] (dot-stuffing) in the
//! server's 128 KiB read chunks.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pop3_proto::{BodyEncoder, LineBuffer, Reply, encode, parse_line};

/// What a polling client sends in one session (scenario (a) of docs/BENCHMARKS.md).
fn session_script() -> Vec<u8> {
    let mut s =
        b"CAPA\r\nUSER john@example.com\r\nPASS correct horse battery\r\nSTAT\r\nUIDL\r\n".to_vec();
    for n in 1..=20 {
        s.extend_from_slice(format!("RETR {n}\r\n").as_bytes());
    }
    s.extend_from_slice(b"QUIT\r\n");
    s
}

/// A CRLF message of about `size` bytes: a header, 76-column text lines, and every tenth line
/// starting with a dot so the stuffing path is taken.
fn message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: alice@example.net\r\nTo: john@example.com\r\nSubject: bench\r\n\r\n".to_vec();
    let mut i = 0u64;
    while m.len() < size {
        let lead = if i.is_multiple_of(10) { "." } else { "" };
        m.extend_from_slice(
            format!("{lead}line {i:08} the quick brown fox jumps over the lazy dog 0123456789\r\n")
                .as_bytes(),
        );
        i += 1;
    }
    m
}

fn parse(c: &mut Criterion) {
    let script = session_script();
    let lines: Vec<Vec<u8>> = script
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect();
    let mut g = c.benchmark_group("commands");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("parse_line/session", |b| {
        b.iter(|| {
            for l in &lines {
                let _ = black_box(parse_line(black_box(l)));
            }
        })
    });
    g.bench_function("frame+parse/session", |b| {
        b.iter(|| {
            let mut buf = LineBuffer::new();
            buf.push(black_box(&script));
            while let Some(Ok(l)) = buf.next_line() {
                let _ = black_box(parse_line(&l));
            }
        })
    });
    g.finish();
}

fn uidl(c: &mut Criterion) {
    let mut g = c.benchmark_group("uidl");
    for n in [20usize, 50_000] {
        let lines: Vec<String> = (1..=n)
            .map(|i| format!("{i} 0000{i:08x}0a1b2c3d"))
            .collect();
        let reply = Reply::Multi {
            first: format!("{n} messages"),
            lines,
        };
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("encode", n), &reply, |b, r| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                encode(black_box(r), &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn body(c: &mut Criterion) {
    let mut g = c.benchmark_group("retr");
    for size in [4 * 1024usize, 4 * 1024 * 1024] {
        let msg = message(size);
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("dot_stuff_128k_chunks", size),
            &msg,
            |b, m| {
                let mut out = Vec::with_capacity(m.len() + m.len() / 50 + 8);
                b.iter(|| {
                    out.clear();
                    let mut enc = BodyEncoder::retr();
                    for chunk in m.chunks(128 * 1024) {
                        enc.push(black_box(chunk), &mut out);
                    }
                    enc.finish(&mut out);
                    black_box(out.len())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, parse, uidl, body);
criterion_main!(benches);

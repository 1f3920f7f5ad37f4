//! Cuts the client's byte stream into command lines. Finding where a line ends is kept apart from
//! parsing it, so an over-long or garbled line is dropped whole and the next command is read as if
//! nothing had happened.

use std::collections::VecDeque;
use std::mem;

use crate::limits::{MAX_COMMAND_LINE, MAX_SASL_LINE};

/// Most bytes a line may hold before its CRLF. Lines are framed at the longest limit any line
/// has (a SASL response's); each consumer then holds the line to its own limit when it takes it
/// ([`LineBuffer::next_line_within`]), so a pipelined response line is judged by the state it is
/// read in, not by the state the session was in when its bytes arrived.
const MAX_CONTENT: usize = MAX_SASL_LINE - 2;
/// Most bytes of an unfinished line kept: the content plus a CR whose LF has not arrived yet.
const MAX_PARTIAL: usize = MAX_SASL_LINE - 1;

/// A command line was longer than RFC 2449's 255 octets (CRLF included) and was discarded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
#[error("command line too long")]
pub struct LineTooLong;

/// Collects bytes read from the socket and hands out complete lines.
///
/// A line ends at LF; a CR just before it is dropped, so clients that send bare LF still work.
/// A command line with more than 253 bytes before its line ending yields one `Err(LineTooLong)`
/// (so replies stay in command order), and at most `MAX_SASL_LINE` - 1 bytes of a line are ever
/// held whatever the client sends.
#[derive(Debug, Default)]
pub struct LineBuffer {
    ready: VecDeque<Result<Vec<u8>, LineTooLong>>,
    partial: Vec<u8>,
    overflowed: bool,
}

impl LineBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let (segment, tail) = bytes.split_at(i);
                    self.append(segment);
                    self.end_line();
                    bytes = tail.split_first().map(|(_, rest)| rest).unwrap_or_default();
                }
                None => {
                    self.append(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// The next complete command line without its line ending, or `None` until one has arrived;
    /// held to RFC 2449's 255 octets.
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, LineTooLong>> {
        self.next_line_within(MAX_COMMAND_LINE)
    }

    /// As [`next_line`](Self::next_line), for a line that may hold up to `max_line` octets with
    /// its CRLF (at most [`MAX_SASL_LINE`]): a SASL response line (RFC 5034 §4), whether it
    /// arrived after the `+` challenge or in the same write as the `AUTH` before it.
    pub fn next_line_within(&mut self, max_line: usize) -> Option<Result<Vec<u8>, LineTooLong>> {
        let line = self.ready.pop_front()?;
        Some(line.and_then(|l| {
            if l.len() + 2 > max_line {
                Err(LineTooLong)
            } else {
                Ok(l)
            }
        }))
    }

    /// Whether [`next_line`](Self::next_line) has something to return. A server answering a
    /// pipelined batch flushes its replies only once this is false.
    pub fn has_line(&self) -> bool {
        !self.ready.is_empty()
    }

    fn append(&mut self, segment: &[u8]) {
        if self.overflowed {
            return;
        }
        if segment.len() > MAX_PARTIAL.saturating_sub(self.partial.len()) {
            // Drop what we have now rather than at the LF: the client may never send one.
            self.overflowed = true;
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(segment);
        }
    }

    fn end_line(&mut self) {
        let mut line = mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let overflowed = mem::take(&mut self.overflowed);
        self.ready
            .push_back(if overflowed || line.len() > MAX_CONTENT {
                Err(LineTooLong)
            } else {
                Ok(line)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_limit_applies_to_the_line_it_is_taken_for() {
        let mut buf = LineBuffer::new();
        let long = vec![b'A'; MAX_SASL_LINE - 2];
        // A response pipelined behind `AUTH PLAIN` in one write: framed before the session knows
        // it is a response, it still gets the response limit when taken as one.
        buf.push(b"AUTH PLAIN\r\n");
        buf.push(&long);
        buf.push(b"\r\n");
        buf.push(&[b'A'; MAX_SASL_LINE - 1]);
        buf.push(b"\r\n");
        buf.push(&[b'A'; 300]);
        buf.push(b"\r\nNOOP\r\n");
        assert_eq!(buf.next_line(), Some(Ok(b"AUTH PLAIN".to_vec())));
        assert_eq!(buf.next_line_within(MAX_SASL_LINE), Some(Ok(long.clone())));
        assert_eq!(buf.next_line_within(MAX_SASL_LINE), Some(Err(LineTooLong)));
        assert_eq!(buf.next_line(), Some(Err(LineTooLong)));
        assert_eq!(buf.next_line(), Some(Ok(b"NOOP".to_vec())));
    }
    use crate::command::{Command, ParseError, parse_line};
    use crate::types::{MsgNum, Password};
    use proptest::prelude::*;

    type Line = Result<Vec<u8>, LineTooLong>;

    fn drain(buf: &mut LineBuffer) -> Vec<Line> {
        std::iter::from_fn(|| buf.next_line()).collect()
    }

    fn feed(chunks: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Vec<Line> {
        let mut buf = LineBuffer::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            buf.push(chunk.as_ref());
            lines.extend(drain(&mut buf));
        }
        lines
    }

    fn ok(s: &str) -> Line {
        Ok(s.as_bytes().to_vec())
    }

    fn script() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"CAPA\r\nUSER alice\r\nPASS  secret with spaces \r\n");
        // Pipelined, with bare-LF lines mixed in.
        s.extend_from_slice(b"STAT\nLIST\r\nUIDL 1\n");
        s.extend_from_slice(b"RETR ");
        s.extend_from_slice(&[b'1'; 300]);
        s.extend_from_slice(b"\r\n");
        s.extend_from_slice(b"retr 2\r\n\r\n  \r\nTOP 1 0\r\nRETR 0\r\nDELE 1\nQUIT\r\n");
        // An unfinished line never comes out.
        s.extend_from_slice(b"NOOP\r");
        s
    }

    fn expected_lines() -> Vec<Line> {
        vec![
            ok("CAPA"),
            ok("USER alice"),
            ok("PASS  secret with spaces "),
            ok("STAT"),
            ok("LIST"),
            ok("UIDL 1"),
            Err(LineTooLong),
            ok("retr 2"),
            ok(""),
            ok("  "),
            ok("TOP 1 0"),
            ok("RETR 0"),
            ok("DELE 1"),
            ok("QUIT"),
        ]
    }

    #[test]
    fn script_in_any_chunk_size_gives_the_same_lines_and_commands() {
        let m = |n| MsgNum::new(n).unwrap();
        let expected_commands: Vec<Result<Command, Option<ParseError>>> = vec![
            Ok(Command::Capa),
            Ok(Command::User("alice".into())),
            Ok(Command::Pass(Password::new(
                b" secret with spaces ".to_vec(),
            ))),
            Ok(Command::Stat),
            Ok(Command::List(None)),
            Ok(Command::Uidl(Some(m(1)))),
            Err(None),
            Ok(Command::Retr(m(2))),
            Err(Some(ParseError::Empty)),
            Err(Some(ParseError::Empty)),
            Ok(Command::Top(m(1), 0)),
            Err(Some(ParseError::InvalidArgument)),
            Ok(Command::Dele(m(1))),
            Ok(Command::Quit),
        ];
        let script = script();
        for size in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512] {
            let lines = feed(script.chunks(size));
            assert_eq!(lines, expected_lines(), "chunk size {size}");
            let commands: Vec<_> = lines
                .iter()
                .map(|line| match line {
                    Ok(line) => parse_line(line).map_err(Some),
                    Err(LineTooLong) => Err(None),
                })
                .collect();
            assert_eq!(commands, expected_commands, "chunk size {size}");
        }
    }

    #[test]
    fn has_line_tracks_pipelined_lines() {
        let mut buf = LineBuffer::new();
        assert!(!buf.has_line());
        buf.push(b"STAT\r\nLIST\r\nNO");
        assert!(buf.has_line());
        assert_eq!(buf.next_line(), Some(ok("STAT")));
        assert!(buf.has_line());
        assert_eq!(buf.next_line(), Some(ok("LIST")));
        assert!(!buf.has_line());
        assert_eq!(buf.next_line(), None);
        buf.push(b"OP\r");
        assert!(!buf.has_line());
        buf.push(b"\n");
        assert!(buf.has_line());
        assert_eq!(buf.next_line(), Some(ok("NOOP")));
    }

    #[test]
    fn pending_line_too_long_counts_as_a_line() {
        let mut buf = LineBuffer::new();
        buf.push(&[b'x'; 400]);
        assert!(!buf.has_line());
        buf.push(b"\r\n");
        assert!(buf.has_line());
        assert_eq!(buf.next_line(), Some(Err(LineTooLong)));
        assert!(!buf.has_line());
    }

    #[test]
    fn length_limit_is_255_with_crlf() {
        let at_limit = "a".repeat(253);
        let over = "a".repeat(254);
        let cases: Vec<(String, Line)> = vec![
            (format!("{at_limit}\r\n"), ok(&at_limit)),
            (format!("{at_limit}\n"), ok(&at_limit)),
            (format!("{over}\r\n"), Err(LineTooLong)),
            (format!("{over}\n"), Err(LineTooLong)),
            (format!("{at_limit}\r\r\n"), Err(LineTooLong)),
        ];
        for (input, expected) in cases {
            for size in [1, 3, 254, 255, 512] {
                assert_eq!(
                    feed(input.as_bytes().chunks(size)),
                    vec![expected.clone()],
                    "{} bytes in chunks of {size}",
                    input.len()
                );
            }
        }
    }

    #[test]
    fn one_error_per_long_line_and_the_next_line_survives() {
        let long = "A".repeat(1000);
        let input = format!("{long}\r\n{long}\nNOOP\r\n");
        assert_eq!(
            feed([input.as_bytes()]),
            vec![Err(LineTooLong), Err(LineTooLong), ok("NOOP")]
        );
    }

    #[test]
    fn memory_stays_bounded_for_an_endless_line() {
        let mut buf = LineBuffer::new();
        let megabyte = vec![b'A'; 1 << 20];
        for _ in 0..4 {
            buf.push(&megabyte);
            assert!(buf.partial.capacity() <= MAX_SASL_LINE * 2);
            assert!(buf.ready.is_empty());
        }
        buf.push(b"\r\nQUIT\r\n");
        assert_eq!(drain(&mut buf), vec![Err(LineTooLong), ok("QUIT")]);
    }

    #[test]
    fn only_a_cr_right_before_lf_is_stripped() {
        assert_eq!(
            feed([b"a\rb\r\n\r\r\n\n".as_slice()]),
            vec![ok("a\rb"), ok("\r"), ok("")]
        );
    }

    /// The same framing, written the obvious way over the whole input.
    fn model(input: &[u8]) -> Vec<Line> {
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        parts.pop(); // the unfinished tail
        parts
            .into_iter()
            .map(|part| {
                let line = part.strip_suffix(b"\r").unwrap_or(part);
                if line.len() + 2 > MAX_COMMAND_LINE {
                    Err(LineTooLong)
                } else {
                    Ok(line.to_vec())
                }
            })
            .collect()
    }

    fn chunked(data: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut rest = data;
        let mut chunks = Vec::new();
        for &size in sizes {
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(chunk.to_vec());
            rest = tail;
        }
        chunks.push(rest.to_vec());
        chunks
    }

    fn byte_stream() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => Just(b'a'),
            1 => Just(b'\r'),
            1 => Just(b'\n'),
            1 => any::<u8>(),
        ];
        // Runs of one byte make over-long lines likely.
        prop::collection::vec((byte, 1usize..120), 0..30).prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(b, n)| std::iter::repeat_n(b, n))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_the_lines(
            data in byte_stream(),
            sizes in prop::collection::vec(0usize..300, 0..20),
        ) {
            prop_assert_eq!(feed(chunked(&data, &sizes)), model(&data));
        }
    }
}

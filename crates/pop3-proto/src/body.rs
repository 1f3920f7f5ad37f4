//! Streams a stored message out as the body of a RETR or TOP reply: dot-stuffing, TOP's cut after
//! the header and `n` body lines, and the terminating line. It works on chunks so a large message
//! never has to be in memory, and keeps just enough state to be right whatever the chunk
//! boundaries (between CR and LF, or just before a line's leading dot).

/// What the current input line holds so far, enough to tell the blank line that ends the header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LineSoFar {
    Empty,
    Cr,
    Text,
}

impl LineSoFar {
    fn extend(self, bytes: &[u8]) -> Self {
        match (self, bytes) {
            (state, []) => state,
            (LineSoFar::Empty, b"\r") => LineSoFar::Cr,
            _ => LineSoFar::Text,
        }
    }
}

/// Dot-stuffs a CRLF-normalised stored message for RETR or TOP.
///
/// The caller writes the `+OK` status line with [`encode`](crate::encode), then feeds the message
/// through [`push`](Self::push) in chunks of any size, then calls [`finish`](Self::finish). Every
/// line starting with `.` goes out with an extra `.`, for TOP as for RETR.
#[derive(Clone, Debug)]
pub struct BodyEncoder {
    /// `None` for RETR; for TOP, the body lines still to send once the header has ended.
    body_lines_left: Option<u32>,
    in_header: bool,
    line: LineSoFar,
    /// The last two bytes written, to know whether the output already ends with CRLF.
    tail: [u8; 2],
    wrote_any: bool,
    done: bool,
}

impl BodyEncoder {
    /// For RETR: the whole message.
    pub fn retr() -> Self {
        Self::with_limit(None)
    }

    /// For `TOP msg n`: every header line, the blank line ending the header, then `body_lines`
    /// lines of the body. A message without a blank line is all header and goes out whole; a
    /// last body line without CRLF counts as a line.
    pub fn top(body_lines: u32) -> Self {
        Self::with_limit(Some(body_lines))
    }

    fn with_limit(body_lines_left: Option<u32>) -> Self {
        BodyEncoder {
            body_lines_left,
            in_header: true,
            line: LineSoFar::Empty,
            tail: [0; 2],
            wrote_any: false,
            done: false,
        }
    }

    /// Appends the dot-stuffed form of the next `chunk` of the message to `out`. Once TOP has
    /// sent all it needs, further input is ignored.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.body_lines_left.is_none() {
            self.push_whole(chunk, out);
        } else {
            self.push_lines(chunk, out);
        }
    }

    /// RETR: when no line in `chunk` needs a dot, counts `chunk` as sent and returns true: the
    /// caller sends it as it is instead of copying it through [`push`](Self::push), which saves
    /// a copy of a large message. Otherwise (or for TOP) returns false and changes nothing.
    pub fn pass_through(&mut self, chunk: &[u8]) -> bool {
        let Some(&first) = chunk.first() else {
            return false;
        };
        if self.body_lines_left.is_some()
            || (first == b'.' && self.line == LineSoFar::Empty)
            || memchr::memmem::find(chunk, b"\n.").is_some()
        {
            return false;
        }
        self.note_written(chunk);
        self.track_line(chunk);
        true
    }

    /// RETR: nothing is cut, so only the lines that start with `.` matter. The runs between them
    /// are copied whole; `memmem` finds each `\n.` (a line start with a dot inside the chunk),
    /// the line state carried over from the previous chunk covers a dot at the chunk's start.
    fn push_whole(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(&first) = chunk.first() else { return };
        out.reserve(chunk.len() + chunk.len() / 64 + 1);
        if first == b'.' && self.line == LineSoFar::Empty {
            self.write(out, b".");
        }
        let mut start = 0;
        for i in memchr::memmem::find_iter(chunk, b"\n.") {
            // Up to and including the `\n`; the dot starts the next run.
            let end = i + 1;
            self.write(out, chunk.get(start..end).unwrap_or_default());
            self.write(out, b".");
            start = end;
        }
        self.write(out, chunk.get(start..).unwrap_or_default());
        self.track_line(chunk);
    }

    /// RETR, after `chunk`: the header/body split only matters to TOP; RETR just tracks
    /// whether a line is open.
    fn track_line(&mut self, chunk: &[u8]) {
        self.line = match memchr::memrchr(b'\n', chunk) {
            Some(i) => LineSoFar::Empty.extend(chunk.get(i + 1..).unwrap_or_default()),
            None => self.line.extend(chunk),
        };
    }

    /// TOP: line by line, counting the body lines.
    fn push_lines(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        while !self.done {
            let Some(&first) = chunk.first() else { return };
            if first == b'.' && self.line == LineSoFar::Empty {
                self.write(out, b".");
            }
            let (segment, rest, ends_line) = match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    let (segment, rest) = chunk.split_at(i.saturating_add(1));
                    (segment, rest, true)
                }
                None => (chunk, &[][..], false),
            };
            self.write(out, segment);
            chunk = rest;
            if ends_line {
                let content = segment.split_last().map(|(_, c)| c).unwrap_or_default();
                let blank = self.line.extend(content) != LineSoFar::Text;
                self.line = LineSoFar::Empty;
                self.end_line(blank);
            } else {
                self.line = self.line.extend(segment);
            }
        }
    }

    /// Whether TOP has sent everything it will: the caller may stop reading the message. Always
    /// false for RETR.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends the end of the reply: a CRLF if the output so far does not end with one, then
    /// `.` CRLF. An empty message gives just `.` CRLF, since no line is open that would need ending.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.wrote_any && self.tail != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    fn end_line(&mut self, blank: bool) {
        if self.in_header {
            if blank {
                self.in_header = false;
                self.done = self.body_lines_left == Some(0);
            }
        } else if let Some(left) = &mut self.body_lines_left {
            *left = left.saturating_sub(1);
            self.done = *left == 0;
        }
    }

    fn write(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(bytes);
        self.note_written(bytes);
    }

    /// Remembers the end of what went out, for `finish`.
    fn note_written(&mut self, bytes: &[u8]) {
        match bytes {
            [] => {}
            [b] => self.tail = [self.tail[1], *b],
            [.., a, b] => self.tail = [*a, *b],
        }
        self.wrote_any |= !bytes.is_empty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(mut enc: BodyEncoder, chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for chunk in chunks {
            enc.push(chunk, &mut out);
        }
        let done = enc.is_done();
        enc.finish(&mut out);
        (out, done)
    }

    /// As the server sends a large RETR: each chunk passed through as it is where the encoder
    /// allows it, pushed otherwise. Returns the output and how many chunks passed.
    fn run_passing(mut enc: BodyEncoder, chunks: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut passed = 0;
        for chunk in chunks {
            if enc.pass_through(chunk) {
                out.extend_from_slice(chunk);
                passed += 1;
            } else {
                enc.push(chunk, &mut out);
            }
        }
        enc.finish(&mut out);
        (out, passed)
    }

    fn retr(msg: &[u8]) -> Vec<u8> {
        run(BodyEncoder::retr(), &[msg]).0
    }

    fn top(msg: &[u8], n: u32) -> (Vec<u8>, bool) {
        run(BodyEncoder::top(n), &[msg])
    }

    fn show(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn retr_cases() {
        let cases: Vec<(&[u8], &[u8])> = vec![
            (b"", b".\r\n"),
            (b"A: b\r\n\r\nbody\r\n", b"A: b\r\n\r\nbody\r\n.\r\n"),
            (b"A: b\r\n\r\nbody", b"A: b\r\n\r\nbody\r\n.\r\n"),
            (b"\r\n", b"\r\n.\r\n"),
            (b"abc", b"abc\r\n.\r\n"),
            (b"abc\r", b"abc\r\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (
                b"S: x\r\n\r\n.\r\n..x\r\n.y\r\na.b\r\n",
                b"S: x\r\n\r\n..\r\n...x\r\n..y\r\na.b\r\n.\r\n",
            ),
            (b"S: x\r\n\r\n.last", b"S: x\r\n\r\n..last\r\n.\r\n"),
        ];
        for (msg, expected) in cases {
            assert_eq!(show(&retr(msg)), show(expected), "{}", show(msg));
        }
    }

    #[test]
    fn only_chunks_without_a_line_starting_with_a_dot_pass_through() {
        let chunks: [&[u8]; 5] = [
            b"A: b\r\n\r\nbody\r",
            b"\n.dot\r\n",
            b"plain\r\n",
            b".x\r\n",
            b"end",
        ];
        let (out, passed) = run_passing(BodyEncoder::retr(), &chunks);
        // The second starts with a dot after the first's line end is completed by its `\n`:
        // it has `\n.` inside. The fourth starts a line with a dot.
        assert_eq!(passed, 3);
        assert_eq!(show(&out), show(&retr(&chunks.concat())));
        assert!(
            !BodyEncoder::top(5).pass_through(b"plain\r\n"),
            "TOP counts lines"
        );
        assert!(!BodyEncoder::retr().pass_through(b""));
    }

    #[test]
    fn retr_is_never_done() {
        let (_, done) = run(BodyEncoder::retr(), &[b"S: x\r\n\r\nbody\r\n"]);
        assert!(!done);
    }

    #[test]
    fn chunk_boundaries_between_cr_lf_and_before_a_dot() {
        let chunks: &[&[u8]] = &[b"a\r", b"\n", b".", b"b\r\n", b"", b".", b".\r", b"\n."];
        let (out, _) = run(BodyEncoder::retr(), chunks);
        assert_eq!(show(&out), "a\r\n..b\r\n...\r\n..\r\n.\r\n");
    }

    /// Inputs where a dot, a CR or an LF sits at or next to every place a chunk can end, plus a
    /// long one so `memmem`'s vectorised paths (not only its short-haystack one) see dots at
    /// many offsets.
    fn tricky() -> Vec<Vec<u8>> {
        let mut inputs: Vec<Vec<u8>> = [
            &b"."[..],
            b"..",
            b".\r\n.",
            b"\r\n.\r\n..\r\n",
            b"a\r\n.b\r\n\r\n.\r\n.",
            b"\n.\n.\n..\r.\r\n.",
            b"x.\r\n.y.\r\n\r",
            b"S: x\r\n\r\n.\r\n..x\r\n.y\r\na.b\r\n",
        ]
        .iter()
        .map(|m| m.to_vec())
        .collect();
        let mut long = Vec::new();
        for i in 0..300usize {
            if i % 3 == 0 {
                long.push(b'.');
            }
            long.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, i % 37));
            long.extend_from_slice(if i % 5 == 0 { b".\r\n" } else { b"\r\n" });
        }
        long.extend_from_slice(b".");
        inputs.push(long);
        inputs
    }

    #[test]
    fn retr_equals_the_line_model_at_every_split() {
        for msg in tricky() {
            let expected = model(&msg, None);
            for i in 0..=msg.len() {
                let (a, b) = msg.split_at(i);
                let (out, _) = run(BodyEncoder::retr(), &[a, b]);
                assert_eq!(
                    show(&out),
                    show(&expected),
                    "split at {i} of {}",
                    show(&msg)
                );
                let (out, _) = run_passing(BodyEncoder::retr(), &[a, b]);
                assert_eq!(
                    show(&out),
                    show(&expected),
                    "passing through, split at {i} of {}",
                    show(&msg)
                );
            }
            // Two splits, on the short inputs (every pair) and byte by byte on all of them.
            if msg.len() < 40 {
                for i in 0..=msg.len() {
                    for j in i..=msg.len() {
                        let chunks = [&msg[..i], &msg[i..j], &msg[j..]];
                        let (out, _) = run(BodyEncoder::retr(), &chunks);
                        assert_eq!(show(&out), show(&expected), "splits {i},{j}");
                    }
                }
            }
            let bytes: Vec<&[u8]> = msg.chunks(1).collect();
            let (out, _) = run(BodyEncoder::retr(), &bytes);
            assert_eq!(show(&out), show(&expected), "byte by byte");
        }
    }

    #[test]
    fn top_equals_the_line_model_at_every_split() {
        // TOP's model knows only CRLF line ends (stored messages are CRLF-normalised).
        let crlf_only = |m: &Vec<u8>| m.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r');
        for msg in tricky()
            .into_iter()
            .filter(|m| crlf_only(m) && !m.starts_with(b"\n"))
        {
            for n in [0, 1, 2, 5] {
                let expected = model(&msg, Some(n));
                for i in 0..=msg.len() {
                    let (a, b) = msg.split_at(i);
                    let (out, _) = run(BodyEncoder::top(n), &[a, b]);
                    assert_eq!(show(&out), show(&expected), "TOP {n} split at {i}");
                }
            }
        }
    }

    const MSG: &[u8] = b"Subject: x\r\nFrom: y\r\n\r\nline1\r\n.line2\r\nline3\r\n";

    #[test]
    fn top_cases() {
        let head: &[u8] = b"Subject: x\r\nFrom: y\r\n\r\n";
        let cases: Vec<(&[u8], u32, &[u8], bool)> = vec![
            (MSG, 0, b"Subject: x\r\nFrom: y\r\n\r\n.\r\n", true),
            (MSG, 1, b"Subject: x\r\nFrom: y\r\n\r\nline1\r\n.\r\n", true),
            (
                MSG,
                2,
                b"Subject: x\r\nFrom: y\r\n\r\nline1\r\n..line2\r\n.\r\n",
                true,
            ),
            (
                MSG,
                3,
                b"Subject: x\r\nFrom: y\r\n\r\nline1\r\n..line2\r\nline3\r\n.\r\n",
                true,
            ),
            (
                MSG,
                99_999_999,
                b"Subject: x\r\nFrom: y\r\n\r\nline1\r\n..line2\r\nline3\r\n.\r\n",
                false,
            ),
            // No blank line: it is all header.
            (
                b"Subject: x\r\nFrom: y\r\n",
                0,
                b"Subject: x\r\nFrom: y\r\n.\r\n",
                false,
            ),
            (
                b"Subject: x\r\nFrom: y",
                0,
                b"Subject: x\r\nFrom: y\r\n.\r\n",
                false,
            ),
            // Header only, ended by its blank line.
            (head, 0, b"Subject: x\r\nFrom: y\r\n\r\n.\r\n", true),
            (head, 5, b"Subject: x\r\nFrom: y\r\n\r\n.\r\n", false),
            // A last body line without CRLF is a line.
            (b"S: x\r\n\r\nonly", 1, b"S: x\r\n\r\nonly\r\n.\r\n", false),
            (b"S: x\r\n\r\nonly", 0, b"S: x\r\n\r\n.\r\n", true),
            // Empty header: the first line is the blank one.
            (b"\r\nbody1\r\nbody2\r\n", 1, b"\r\nbody1\r\n.\r\n", true),
            (b"\r\nbody1\r\nbody2\r\n", 0, b"\r\n.\r\n", true),
            // Dots in the header and blank lines in the body.
            (
                b".H: 1\r\n\r\n.\r\n\r\n.b\r\nc\r\n",
                3,
                b"..H: 1\r\n\r\n..\r\n\r\n..b\r\n.\r\n",
                true,
            ),
            // Folded header lines are header lines.
            (
                b"S: a\r\n b\r\n\r\nbody\r\n",
                0,
                b"S: a\r\n b\r\n\r\n.\r\n",
                true,
            ),
            (b"", 0, b".\r\n", false),
            (b"", 3, b".\r\n", false),
        ];
        for (msg, n, expected, done) in cases {
            let (out, is_done) = top(msg, n);
            assert_eq!(show(&out), show(expected), "TOP {n} of {}", show(msg));
            assert_eq!(is_done, done, "is_done for TOP {n} of {}", show(msg));
        }
    }

    #[test]
    fn top_ignores_input_after_it_is_done() {
        let mut enc = BodyEncoder::top(1);
        let mut out = Vec::new();
        enc.push(b"S: x\r\n\r\nfirst\r\n", &mut out);
        assert!(enc.is_done());
        enc.push(b"second\r\n.third", &mut out);
        enc.finish(&mut out);
        assert_eq!(show(&out), "S: x\r\n\r\nfirst\r\n.\r\n");
    }

    #[test]
    fn output_is_appended_after_the_status_line() {
        let mut out = b"+OK 3 octets\r\n".to_vec();
        let mut enc = BodyEncoder::retr();
        enc.push(b"abc", &mut out);
        enc.finish(&mut out);
        assert_eq!(show(&out), "+OK 3 octets\r\nabc\r\n.\r\n");
        // The status line's CRLF does not count as the message's own ending.
        let mut out = b"+OK 0 octets\r\n".to_vec();
        BodyEncoder::retr().finish(&mut out);
        assert_eq!(show(&out), "+OK 0 octets\r\n.\r\n");
    }

    /// Undoes dot-stuffing and checks the terminator comes once, at the end.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire
            .strip_suffix(b".\r\n")
            .expect("output must end with the terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            assert_ne!(
                line,
                b".\r\n",
                "terminator before the end in {}",
                show(wire)
            );
            match line.strip_prefix(b".") {
                Some(rest) => {
                    assert!(rest.starts_with(b"."), "unstuffed dot in {}", show(wire));
                    out.extend_from_slice(rest);
                }
                None => out.extend_from_slice(line),
            }
        }
        if !body.is_empty() {
            assert!(body.ends_with(b"\r\n"));
        }
        out
    }

    /// TOP written the obvious way, line by line over the whole message.
    fn model(msg: &[u8], limit: Option<u32>) -> Vec<u8> {
        let mut lines = msg.split_inclusive(|&b| b == b'\n');
        let mut kept: Vec<&[u8]> = Vec::new();
        for line in lines.by_ref() {
            kept.push(line);
            if line == b"\r\n" {
                break;
            }
        }
        let body: Vec<&[u8]> = match limit {
            Some(n) => lines.take(n as usize).collect(),
            None => lines.collect(),
        };
        kept.extend(body);
        let mut out = Vec::new();
        for line in &kept {
            if line.starts_with(b".") {
                out.push(b'.');
            }
            out.extend_from_slice(line);
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![
            prop::collection::vec(prop_oneof![Just(b'a'), Just(b'.'), Just(b' ')], 0..6),
            prop::collection::vec(any::<u8>(), 0..12),
        ]
        .prop_map(|bytes| {
            bytes
                .into_iter()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect::<Vec<u8>>()
        });
        (any::<bool>(), text).prop_map(|(dot, mut text)| {
            if dot {
                text.insert(0, b'.');
            }
            text
        })
    }

    /// A CRLF-normalised message: lines joined by CRLF, with or without a final CRLF.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        (prop::collection::vec(line(), 0..12), any::<bool>()).prop_map(|(lines, crlf_end)| {
            let mut msg = lines.join(&b"\r\n"[..]);
            if crlf_end && !lines.is_empty() {
                msg.extend_from_slice(b"\r\n");
            }
            msg
        })
    }

    fn chunked<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut rest = data;
        let mut chunks = Vec::new();
        for &size in sizes {
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks.push(rest);
        chunks
    }

    fn sizes() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(0usize..8, 0..40)
    }

    proptest! {
        #[test]
        fn retr_round_trips(msg in message(), sizes in sizes()) {
            let (out, _) = run(BodyEncoder::retr(), &chunked(&msg, &sizes));
            let mut expected = msg.clone();
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(show(&unstuff(&out)), show(&expected));
            prop_assert_eq!(show(&out), show(&model(&msg, None)));
            let (passing, _) = run_passing(BodyEncoder::retr(), &chunked(&msg, &sizes));
            prop_assert_eq!(show(&passing), show(&out));
        }

        #[test]
        fn top_chunked_equals_top_whole(msg in message(), n in 0u32..8, sizes in sizes()) {
            let whole = top(&msg, n);
            let pieces = run(BodyEncoder::top(n), &chunked(&msg, &sizes));
            prop_assert_eq!(show(&pieces.0), show(&whole.0));
            prop_assert_eq!(pieces.1, whole.1);
        }

        #[test]
        fn top_matches_the_line_model(msg in message(), n in 0u32..8) {
            let (out, _) = top(&msg, n);
            prop_assert_eq!(show(&out), show(&model(&msg, Some(n))));
            unstuff(&out);
        }
    }
}

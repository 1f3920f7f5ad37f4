//! The DATA stream decoder: finds the end of the data, removes the dot-stuffing and turns bare
//! LF line endings into CRLF, so what is stored is what POP3 will count and send.
//!
//! Only `CRLF . CRLF` ends the data (RFC 5321 §4.1.1.4), counting the start of DATA as just
//! after a CRLF. A server that also ends on `LF . LF`, `CRLF . LF` or `LF . CRLF` can be sent a
//! second message hidden inside the first, with a sender of the attacker's choosing, by any
//! relay that passes those through as body text ("SMTP smuggling", 2023).
//!
//! Otherwise bare LF still ends a line, as senders that write bare LF mean it to, and is
//! stored as CRLF: the leading dot of a line after a bare LF is a stuffing dot like any other.
//! A line that is just `.` but is not the terminator (a bare LF before or after it) is stored
//! as the body line `.`: RFC 5321 §4.5.2 removes a leading dot only when other characters
//! follow, and keeping it shows the reader what was sent. Every would-be terminator above is
//! thus stored as the same `CRLF . CRLF`, which RETR dot-stuffs like any line starting with `.`.
//! A bare CR is message content.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// At the start of a line.
    Bol,
    /// Inside a line.
    Mid,
    /// Inside a line, a CR seen and held back until we know whether LF follows.
    Cr,
    /// A line that began with '.'.
    Dot,
    /// A line that began with ".\r".
    DotCr,
    Done,
}

/// Decodes one DATA section fed in arbitrary chunks.
#[derive(Debug)]
pub struct DataDecoder {
    st: St,
    /// Whether the current line began after a CRLF or at the start of the data: only then can
    /// it be the terminator.
    after_crlf: bool,
}

impl Default for DataDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataDecoder {
    pub fn new() -> Self {
        Self {
            st: St::Bol,
            after_crlf: true,
        }
    }

    pub fn is_done(&self) -> bool {
        self.st == St::Done
    }

    /// Appends the decoded message bytes of `input` to `out` and returns how many input bytes
    /// were used: fewer than given once the terminator is seen (the rest is the next command).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while i < input.len() && self.st != St::Done {
            if self.st == St::Mid {
                // Fast path: copy up to the next line-ending byte in one go.
                let rest = &input[i..];
                let n = rest
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(rest.len());
                out.extend_from_slice(&rest[..n]);
                i += n;
                if i == input.len() {
                    break;
                }
            }
            self.byte(input[i], out);
            i += 1;
        }
        i
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        self.st = match (self.st, b) {
            (St::Done, _) => St::Done,
            (St::Bol, b'.') => St::Dot,
            (St::Dot, b'\r') => St::DotCr,
            (St::DotCr, b'\n') if self.after_crlf => St::Done,
            // A lone "." that cannot be the terminator: body text (see the module doc).
            (St::Dot, b'\n') => {
                out.push(b'.');
                return self.end_line(false, out);
            }
            (St::DotCr, b'\n') => {
                out.push(b'.');
                return self.end_line(true, out);
            }
            // ".x": a stuffed dot, dropped.
            (St::Dot, _) => return self.mid(b, out),
            (St::DotCr, _) => {
                self.st = St::Cr;
                return self.byte(b, out);
            }
            (St::Cr, b'\n') => return self.end_line(true, out),
            (St::Cr, _) => {
                out.push(b'\r');
                self.st = St::Mid;
                return self.byte(b, out);
            }
            (St::Bol | St::Mid, _) => return self.mid(b, out),
        };
    }

    fn mid(&mut self, b: u8, out: &mut Vec<u8>) {
        self.st = match b {
            b'\r' => St::Cr,
            b'\n' => return self.end_line(false, out),
            _ => {
                out.push(b);
                St::Mid
            }
        };
    }

    /// Ends a line with CRLF in the output, whichever ending it had on the wire.
    fn end_line(&mut self, crlf: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.after_crlf = crlf;
        self.st = St::Bol;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_chunked(input: &[u8], chunk: usize) -> (Vec<u8>, usize, bool) {
        let mut d = DataDecoder::new();
        let mut out = Vec::new();
        let mut used = 0;
        for c in input.chunks(chunk.max(1)) {
            let n = d.push(c, &mut out);
            used += n;
            if n < c.len() || d.is_done() {
                break;
            }
        }
        (out, used, d.is_done())
    }

    /// `(input, stored, Some(bytes used) | None: not the end yet, all used)`.
    const CASES: &[(&[u8], &[u8], Option<usize>)] = &[
        (b".\r\n", b"", Some(3)),
        (b"a\r\n.\r\n", b"a\r\n", Some(6)),
        (b"..x\r\n.\r\nQUIT\r\n", b".x\r\n", Some(8)),
        (b"a\rb\r\n.\r\n", b"a\rb\r\n", Some(8)),
        (b".\rx\r\n.\r\n", b"\rx\r\n", Some(8)),
        (b"x\r\r\n.\r\n", b"x\r\r\n", Some(7)),
        (b"a\r\n..\r\n.\r\nRSET", b"a\r\n.\r\n", Some(10)),
        // Bare LF ends a line (stored as CRLF), and the next line's stuffing dot goes.
        (b"a\nb\n..x\r\n.\r\n", b"a\r\nb\r\n.x\r\n", Some(12)),
        (b"a\n.\r\n.\r\nX", b"a\r\n.\r\n", Some(8)),
        // Smuggling: no end but CRLF . CRLF; the would-be terminator is the body line ".".
        (b"a\n.\nMAIL\r\n", b"a\r\n.\r\nMAIL\r\n", None),
        (b"a\r\n.\nMAIL\r\n", b"a\r\n.\r\nMAIL\r\n", None),
        (b"a\n.\r\nMAIL\r\n", b"a\r\n.\r\nMAIL\r\n", None),
        (b".\nMAIL\r\n", b".\r\nMAIL\r\n", None),
        (b"\n.\n.\r\n", b"\r\n.\r\n.\r\n", None),
        (b"a\r.\rMAIL\r\n", b"a\r.\rMAIL\r\n", None),
        (b"a\r\n.\r\r\nMAIL\r\n", b"a\r\n\r\r\nMAIL\r\n", None),
    ];

    #[test]
    fn table() {
        for (input, want, end) in CASES {
            for chunk in [1, 2, 3, 7, 512] {
                let (out, n, done) = decode_chunked(input, chunk);
                assert_eq!(done, end.is_some(), "{input:?} chunk {chunk}");
                assert_eq!(&out[..], *want, "{input:?} chunk {chunk}");
                assert_eq!(n, end.unwrap_or(input.len()), "{input:?} chunk {chunk}");
            }
        }
        let (_, _, done) = decode_chunked(b"a\r\n.x", 1);
        assert!(!done);
    }

    /// Every split into two reads, whichever byte of a terminator or line ending it falls on.
    #[test]
    fn any_split() {
        for (input, want, end) in CASES {
            for at in 0..=input.len() {
                let mut d = DataDecoder::new();
                let mut out = Vec::new();
                let mut used = d.push(&input[..at], &mut out);
                if !d.is_done() {
                    used += d.push(&input[at..], &mut out);
                }
                assert_eq!(
                    (&out[..], used, d.is_done()),
                    (*want, end.unwrap_or(input.len()), end.is_some()),
                    "{input:?} split at {at}"
                );
            }
        }
    }

    /// The module doc's rules over a whole input, line by line: `Some((stored, bytes used))` if
    /// it holds the terminator.
    fn reference(input: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        let mut used = 0;
        let mut after_crlf = true;
        while let Some(n) = input[used..].iter().position(|&b| b == b'\n') {
            let mut line = &input[used..used + n];
            used += n + 1;
            let crlf = line.last() == Some(&b'\r');
            if crlf {
                line = &line[..line.len() - 1];
            }
            if line == b"." && after_crlf && crlf {
                return Some((out, used));
            }
            if line.len() > 1 && line[0] == b'.' {
                line = &line[1..];
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
            after_crlf = crlf;
        }
        None
    }

    fn stuff(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = Vec::new();
        for l in lines {
            if l.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(l);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        wire
    }

    proptest! {
        #[test]
        fn follows_the_line_rules(
            input in prop::collection::vec(prop::sample::select(&b"a.\r\n"[..]), 0..40),
            terminate in any::<bool>(),
            chunk in 1usize..8,
        ) {
            let mut input = input;
            if terminate {
                input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
            }
            let (out, used, done) = decode_chunked(&input, chunk);
            match reference(&input) {
                Some((want, want_used)) => {
                    prop_assert!(done);
                    prop_assert_eq!(used, want_used);
                    prop_assert_eq!(out, want);
                }
                None => {
                    prop_assert!(!done);
                    prop_assert_eq!(used, input.len());
                }
            }
        }

        #[test]
        fn unstuffs_what_a_client_stuffed(
            lines in prop::collection::vec(prop::collection::vec(prop::sample::select(&b"ab.\r "[..]), 0..12), 0..12),
            chunk in 1usize..40,
        ) {
            // Lines as an SMTP client sends them: no bare CR or LF inside, dots stuffed.
            let lines: Vec<Vec<u8>> = lines.into_iter().map(|l| l.into_iter().filter(|&b| b != b'\r').collect()).collect();
            let wire = stuff(&lines);
            let (out, used, done) = decode_chunked(&wire, chunk);
            prop_assert!(done);
            prop_assert_eq!(used, wire.len());
            let want: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain(*b"\r\n")).collect();
            prop_assert_eq!(out, want);
        }
    }
}

//! The DATA stream decoder: finds the terminating `CRLF . CRLF`, removes the dot-stuffing and
//! turns bare LF line endings into CRLF, so what is stored is what POP3 will count and send.

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
}

impl Default for DataDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataDecoder {
    pub fn new() -> Self {
        Self { st: St::Bol }
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
            (St::Dot | St::DotCr, b'\n') => St::Done,
            // ".x": a stuffed dot, dropped.
            (St::Dot, _) => return self.mid(b, out),
            (St::DotCr, _) => {
                self.st = St::Cr;
                return self.byte(b, out);
            }
            (St::Cr, b'\n') => {
                out.extend_from_slice(b"\r\n");
                St::Bol
            }
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
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                St::Bol
            }
            _ => {
                out.push(b);
                St::Mid
            }
        };
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

    #[test]
    fn table() {
        let cases: &[(&[u8], &[u8], usize)] = &[
            (b".\r\n", b"", 3),
            (b"a\r\n.\r\n", b"a\r\n", 6),
            (b"a\n.\n", b"a\r\n", 4),
            (b"..x\r\n.\r\nQUIT\r\n", b".x\r\n", 8),
            (b"a\rb\r\n.\r\n", b"a\rb\r\n", 8),
            (b".\rx\r\n.\r\n", b"\rx\r\n", 8),
            (b"x\r\r\n.\r\n", b"x\r\r\n", 7),
            (b"a\r\n..\r\n.\r\nRSET", b"a\r\n.\r\n", 10),
        ];
        for (input, want, used) in cases {
            for chunk in [1, 2, 3, 7, 512] {
                let (out, n, done) = decode_chunked(input, chunk);
                assert!(done, "{input:?}");
                assert_eq!(&out[..], *want, "{input:?} chunk {chunk}");
                assert_eq!(n, *used, "{input:?} chunk {chunk}");
            }
        }
        let (_, _, done) = decode_chunked(b"a\r\n.x", 1);
        assert!(!done);
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

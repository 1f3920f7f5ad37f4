//! Server replies as data, and [`encode`], the one function that turns them into bytes: status
//! indicator, RFC 3206 response code, line length limit, dot-stuffing and the terminating line
//! are all decided here and nowhere else.

use std::fmt;

use crate::limits::MAX_REPLY_LINE;

/// An extended response code (RFC 2449 §8, RFC 3206) sent in brackets after `-ERR`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RespCode {
    /// `[IN-USE]`: the maildrop is locked by another session.
    InUse,
    /// `[LOGIN-DELAY]`: the user logged in too recently.
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary server failure; trying again later may work.
    SysTemp,
    /// `[SYS/PERM]`: a lasting server failure that needs an administrator.
    SysPerm,
    /// `[AUTH]`: the credentials were wrong (RFC 3206).
    Auth,
}

impl RespCode {
    fn as_str(self) -> &'static str {
        match self {
            RespCode::InUse => "[IN-USE]",
            RespCode::LoginDelay => "[LOGIN-DELAY]",
            RespCode::SysTemp => "[SYS/TEMP]",
            RespCode::SysPerm => "[SYS/PERM]",
            RespCode::Auth => "[AUTH]",
        }
    }
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One server reply. Texts are free-form: [`encode`] makes them safe for the wire.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Reply {
    /// `+OK text`
    Ok(String),
    /// `-ERR [CODE] text`
    Err(Option<RespCode>, String),
    /// `+OK first`, then each line, then `.`: for CAPA, LIST and UIDL listings. Message bodies go
    /// through [`BodyEncoder`](crate::BodyEncoder) instead, so they need not be held in memory.
    Multi {
        /// The text of the status line.
        first: String,
        /// The lines, without line endings or dot-stuffing.
        lines: Vec<String>,
    },
    /// `+ base64`: a SASL challenge in an `AUTH` exchange (RFC 5034 §4), never `+OK`. Holds the
    /// raw challenge; an empty one is sent as `+ ` with nothing after the space.
    Challenge(Vec<u8>),
}

/// Appends the wire bytes of `reply` to `out`.
///
/// A CR or LF inside any text becomes a space, so no caller can inject a line of its own. The
/// status line is cut at a character boundary to stay within [`MAX_REPLY_LINE`] octets; RFC 2449
/// limits only that line, so the lines of a multi-line reply are left whole.
pub fn encode(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Ok(text) => status_line(out, "+OK", None, text),
        Reply::Err(code, text) => status_line(out, "-ERR", *code, text),
        Reply::Multi { first, lines } => {
            status_line(out, "+OK", None, first);
            for line in lines {
                if line.starts_with('.') {
                    out.push(b'.');
                }
                push_single_line(out, line);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
        }
        Reply::Challenge(data) => {
            out.extend_from_slice(b"+ ");
            out.extend_from_slice(crate::sasl::encode_base64(data).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends a multi-line `+OK` reply of `<number> <text>` lines, as LIST and UIDL send them: the
/// same bytes as [`encode`] of a [`Reply::Multi`] with those lines, without a `String` per line
/// (a listing of a large maildrop has tens of thousands).
pub fn encode_listing<N: fmt::Display, T: fmt::Display>(
    first: &str,
    lines: impl IntoIterator<Item = (N, T)>,
    out: &mut Vec<u8>,
) {
    status_line(out, "+OK", None, first);
    let mut line = String::new();
    for (n, text) in lines {
        encode_listing_line(n, text, &mut line, out);
    }
    encode_listing_end(out);
}

/// One line of a LIST/UIDL listing, for a server that writes a long listing out in parts:
/// the `+OK` line is `Reply::Ok`'s, then these lines, then [`encode_listing_end`]. `scratch` is
/// reused between lines.
pub fn encode_listing_line<N: fmt::Display, T: fmt::Display>(
    n: N,
    text: T,
    scratch: &mut String,
    out: &mut Vec<u8>,
) {
    use fmt::Write as _;
    scratch.clear();
    let _ = write!(scratch, "{n} {text}");
    if scratch.starts_with('.') {
        out.push(b'.');
    }
    push_single_line(out, scratch);
    out.extend_from_slice(b"\r\n");
}

/// The `.` line that ends a multi-line listing.
pub fn encode_listing_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b".\r\n");
}

fn status_line(out: &mut Vec<u8>, indicator: &str, code: Option<RespCode>, text: &str) {
    let mut prefix = String::from(indicator);
    if let Some(code) = code {
        prefix.push(' ');
        prefix.push_str(code.as_str());
    }
    out.extend_from_slice(prefix.as_bytes());
    if !text.is_empty() {
        out.push(b' ');
        let room = MAX_REPLY_LINE.saturating_sub(prefix.len() + " \r\n".len());
        push_single_line(out, truncate(text, room));
    }
    out.extend_from_slice(b"\r\n");
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    (0..=max)
        .rev()
        .find_map(|end| text.get(..end))
        .unwrap_or_default()
}

fn push_single_line(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().map(|b| match b {
        b'\r' | b'\n' => b' ',
        b => b,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(reply: &Reply) -> Vec<u8> {
        let mut out = Vec::new();
        encode(reply, &mut out);
        out
    }

    #[test]
    fn a_listing_is_encoded_like_the_multi_line_reply() {
        let items: Vec<(String, String)> = vec![
            ("1".into(), "abc".into()),
            ("2".into(), "x\r\ny".into()),
            (".3".into(), "dot".into()),
            (String::new(), "".into()),
        ];
        for n in 0..=items.len() {
            let items = &items[..n];
            let multi = Reply::Multi {
                first: "listing\r\nfollows".into(),
                lines: items.iter().map(|(a, b)| format!("{a} {b}")).collect(),
            };
            let mut listing = Vec::new();
            encode_listing(
                "listing\r\nfollows",
                items.iter().map(|(a, b)| (a, b)),
                &mut listing,
            );
            assert_eq!(listing, bytes(&multi));
        }
    }

    #[test]
    fn status_lines() {
        let cases: Vec<(Reply, &[u8])> = vec![
            (Reply::Ok(String::new()), b"+OK\r\n"),
            (Reply::Ok("2 320".into()), b"+OK 2 320\r\n"),
            (
                Reply::Err(None, "no such message".into()),
                b"-ERR no such message\r\n",
            ),
            (Reply::Err(None, String::new()), b"-ERR\r\n"),
            (
                Reply::Err(Some(RespCode::InUse), "maildrop already locked".into()),
                b"-ERR [IN-USE] maildrop already locked\r\n",
            ),
            (
                Reply::Err(Some(RespCode::LoginDelay), "wait".into()),
                b"-ERR [LOGIN-DELAY] wait\r\n",
            ),
            (
                Reply::Err(Some(RespCode::SysTemp), "try later".into()),
                b"-ERR [SYS/TEMP] try later\r\n",
            ),
            (
                Reply::Err(Some(RespCode::SysPerm), "broken".into()),
                b"-ERR [SYS/PERM] broken\r\n",
            ),
            (
                Reply::Err(Some(RespCode::Auth), String::new()),
                b"-ERR [AUTH]\r\n",
            ),
            (
                Reply::Ok("a\r\n+OK b\rc\nd".into()),
                b"+OK a  +OK b c d\r\n",
            ),
        ];
        for (reply, expected) in cases {
            assert_eq!(
                bytes(&reply),
                expected,
                "{reply:?} gave {:?}",
                String::from_utf8_lossy(&bytes(&reply))
            );
        }
    }

    #[test]
    fn multi_line_replies() {
        let capa = Reply::Multi {
            first: "Capability list follows".into(),
            lines: vec!["TOP".into(), "UIDL".into(), "USER".into()],
        };
        assert_eq!(
            bytes(&capa),
            b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\n.\r\n"
        );
        let stuffed = Reply::Multi {
            first: String::new(),
            lines: vec![".".into(), ".hidden".into(), "a.b".into(), String::new()],
        };
        assert_eq!(
            bytes(&stuffed),
            b"+OK\r\n..\r\n..hidden\r\na.b\r\n\r\n.\r\n"
        );
        let empty = Reply::Multi {
            first: "0 messages".into(),
            lines: vec![],
        };
        assert_eq!(bytes(&empty), b"+OK 0 messages\r\n.\r\n");
        let injected = Reply::Multi {
            first: "x\r\n.".into(),
            lines: vec!["1 a\r\n.\r\n+OK".into()],
        };
        assert_eq!(bytes(&injected), b"+OK x  .\r\n1 a  .  +OK\r\n.\r\n");
    }

    #[test]
    fn encode_appends() {
        let mut out = b"+OK 1\r\n".to_vec();
        encode(&Reply::Ok("2".into()), &mut out);
        assert_eq!(out, b"+OK 1\r\n+OK 2\r\n");
    }

    #[test]
    fn long_status_lines_are_cut_to_512() {
        let out = bytes(&Reply::Ok("x".repeat(600)));
        let mut expected = b"+OK ".to_vec();
        expected.extend_from_slice(&[b'x'; 506]);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(out, expected);
        assert_eq!(out.len(), MAX_REPLY_LINE);

        // "-ERR [LOGIN-DELAY] " leaves 491 bytes: 245 two-byte characters, never half of one.
        let out = bytes(&Reply::Err(Some(RespCode::LoginDelay), "é".repeat(300)));
        let expected = format!("-ERR [LOGIN-DELAY] {}\r\n", "é".repeat(245));
        assert_eq!(out, expected.as_bytes());
        assert_eq!(out.len(), 511);

        let exact = "y".repeat(506);
        assert_eq!(
            bytes(&Reply::Ok(exact.clone())),
            format!("+OK {exact}\r\n").as_bytes()
        );
    }

    #[test]
    fn resp_code_display() {
        let cases = [
            (RespCode::InUse, "[IN-USE]"),
            (RespCode::LoginDelay, "[LOGIN-DELAY]"),
            (RespCode::SysTemp, "[SYS/TEMP]"),
            (RespCode::SysPerm, "[SYS/PERM]"),
            (RespCode::Auth, "[AUTH]"),
        ];
        for (code, text) in cases {
            assert_eq!(code.to_string(), text);
        }
    }

    fn resp_code() -> impl Strategy<Value = Option<RespCode>> {
        prop::option::of(prop_oneof![
            Just(RespCode::InUse),
            Just(RespCode::LoginDelay),
            Just(RespCode::SysTemp),
            Just(RespCode::SysPerm),
            Just(RespCode::Auth),
        ])
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z\r\n .é€]{0,20}",
            "[a-z\r\n .é€]{490,700}",
            any::<String>(),
        ]
    }

    fn reply() -> impl Strategy<Value = Reply> {
        prop_oneof![
            text().prop_map(Reply::Ok),
            (resp_code(), text()).prop_map(|(code, text)| Reply::Err(code, text)),
            (text(), prop::collection::vec(text(), 0..4))
                .prop_map(|(first, lines)| Reply::Multi { first, lines }),
        ]
    }

    proptest! {
        #[test]
        fn status_line_is_one_bounded_line(reply in reply()) {
            let out = bytes(&reply);
            let end = out.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
            let status = &out[..end];
            prop_assert!(status.len() <= MAX_REPLY_LINE);
            prop_assert!(status.starts_with(b"+OK") || status.starts_with(b"-ERR"));
            let body = &status[..status.len() - 2];
            prop_assert!(!body.contains(&b'\r') && !body.contains(&b'\n'));
            prop_assert!(std::str::from_utf8(status).is_ok());
            if matches!(reply, Reply::Ok(_) | Reply::Err(..)) {
                prop_assert_eq!(end, out.len());
            }
        }

        #[test]
        fn multi_line_reply_unstuffs_to_its_lines(first in text(), lines in prop::collection::vec(text(), 0..6)) {
            let out = bytes(&Reply::Multi { first, lines: lines.clone() });
            let out = String::from_utf8(out).unwrap();
            let mut wire: Vec<&str> = out.split("\r\n").collect();
            prop_assert_eq!(wire.pop(), Some(""));
            prop_assert_eq!(wire.pop(), Some("."));
            let got: Vec<String> = wire[1..]
                .iter()
                .map(|l| l.strip_prefix('.').unwrap_or(l).to_owned())
                .collect();
            let expected: Vec<String> = lines.iter().map(|l| l.replace(['\r', '\n'], " ")).collect();
            prop_assert_eq!(got, expected);
        }
    }
}

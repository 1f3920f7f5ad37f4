//! What names a delivery for deduplication (see `mailstore::DedupKey`): the first `Message-ID`
//! header, the envelope sender and a SHA-256 digest of the DATA, all taken while the data
//! streams through (`Fingerprint::update` with each decoded piece), so no message is held whole.
//! Without a Message-ID there is no key: two messages without one may well be different mail.

use std::time::Duration;

use mailstore::DedupKey;
use sha2::{Digest, Sha256};

/// The most of a header field kept to look at; a Message-ID is far shorter, and a longer field
/// is cut at the same place in every copy of a message, so it still names the message.
const MAX_FIELD: usize = 4096;

/// Fed the decoded DATA piece by piece; gives the delivery's key at the end.
pub struct Fingerprint {
    digest: Sha256,
    headers: MessageIdScan,
}

impl Default for Fingerprint {
    fn default() -> Self {
        Self::new()
    }
}

impl Fingerprint {
    pub fn new() -> Self {
        Self {
            digest: Sha256::new(),
            headers: MessageIdScan::default(),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
        self.headers.push(data);
    }

    /// The key for a message from `sender`, kept for `window`; `None` without a Message-ID or
    /// with a zero window (deduplication off).
    pub fn key(self, sender: &str, window: Duration) -> Option<DedupKey> {
        if window.is_zero() {
            return None;
        }
        let id = self.headers.finish()?;
        let data: [u8; 32] = self.digest.finalize().into();
        let mut key = Sha256::new();
        // Length-prefixed, so no two different triples hash the same input.
        for part in [
            b"pophost-lmtp-dedup-1".as_slice(),
            &id,
            sender.as_bytes(),
            &data,
        ] {
            key.update((part.len() as u64).to_be_bytes());
            key.update(part);
        }
        Some(DedupKey {
            hash: key.finalize().into(),
            window,
        })
    }
}

/// Finds the first `Message-ID` field of the header section: the name compared without regard
/// to case, folded lines joined (RFC 5322 §2.2.3), the value trimmed. CRs are ignored, LF ends a
/// line (the decoder stores every line ending as CRLF).
#[derive(Debug, Default)]
struct MessageIdScan {
    /// The field read so far, unfolded (at most `MAX_FIELD` bytes of it).
    field: Vec<u8>,
    /// At the start of a line: a space or tab continues the field, an empty line ends the
    /// header section.
    at_bol: bool,
    started: bool,
    /// The first Message-ID field's value, once seen (empty if it was).
    found: Option<Vec<u8>>,
    done: bool,
}

impl MessageIdScan {
    fn push(&mut self, data: &[u8]) {
        for &b in data {
            if self.done {
                return;
            }
            if !self.started {
                self.started = true;
                self.at_bol = true;
            }
            match b {
                b'\r' => {}
                b'\n' if self.at_bol => {
                    self.end_field();
                    self.done = true;
                }
                b'\n' => self.at_bol = true,
                b' ' | b'\t' if self.at_bol => {
                    self.at_bol = false;
                    self.keep(b);
                }
                _ => {
                    if self.at_bol {
                        self.end_field();
                        self.at_bol = false;
                    }
                    self.keep(b);
                }
            }
        }
    }

    fn keep(&mut self, b: u8) {
        if self.field.len() < MAX_FIELD {
            self.field.push(b);
        }
    }

    fn end_field(&mut self) {
        if self.found.is_none()
            && let Some(colon) = self.field.iter().position(|&b| b == b':')
            && self.field[..colon]
                .trim_ascii()
                .eq_ignore_ascii_case(b"message-id")
        {
            self.found = Some(self.field[colon + 1..].trim_ascii().to_vec());
        }
        self.field.clear();
    }

    /// The Message-ID, if the message has a non-empty one.
    fn finish(mut self) -> Option<Vec<u8>> {
        if !self.done {
            // The data ended inside the header section.
            self.end_field();
        }
        self.found.filter(|id| !id.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(message: &[u8]) -> Option<String> {
        let mut scan = MessageIdScan::default();
        scan.push(message);
        scan.finish().map(|v| String::from_utf8(v).expect("utf8"))
    }

    #[test]
    fn finds_the_first_message_id_unfolded_in_any_case() {
        let m = b"From: a@b\r\nmessage-ID:\r\n  <1@x>  \r\nMessage-Id: <2@x>\r\n\r\nbody\r\n";
        assert_eq!(id_of(m).as_deref(), Some("<1@x>"));
        let m = b"Subject: x\r\nMESSAGE-ID : <3@x>\r\n\r\n";
        assert_eq!(id_of(m).as_deref(), Some("<3@x>"));
        // Folding inside the value is joined, keeping the folded line's whitespace.
        let m = b"Message-ID: <4@\r\n\tx>\r\n\r\n";
        assert_eq!(id_of(m).as_deref(), Some("<4@\tx>"));
        // At the very end of data without a body.
        assert_eq!(id_of(b"Message-ID: <5@x>").as_deref(), Some("<5@x>"));
    }

    #[test]
    fn no_message_id_in_the_header_section_is_none() {
        assert_eq!(id_of(b"Subject: x\r\n\r\nMessage-ID: <in body>\r\n"), None);
        assert_eq!(id_of(b"X-Message-ID: <1@x>\r\n\r\n"), None);
        assert_eq!(id_of(b"Subject: Message-ID: <1@x>\r\n\r\n"), None);
        // A first, empty Message-ID is no Message-ID: the second is not looked at.
        assert_eq!(id_of(b"Message-ID:\r\nMessage-ID: <1@x>\r\n\r\n"), None);
        assert_eq!(id_of(b""), None);
    }

    #[test]
    fn any_split_of_the_data_gives_the_same_key() {
        let m = b"Received: from x\r\n\tby y\r\nMessage-ID:\r\n <split@x>\r\n\r\nhello\r\n";
        let whole = {
            let mut f = Fingerprint::new();
            f.update(m);
            f.key("a@b", Duration::from_secs(600)).expect("key")
        };
        for size in [1, 2, 3, 4, 7, 16, 64] {
            let mut f = Fingerprint::new();
            for piece in m.chunks(size) {
                f.update(piece);
            }
            assert_eq!(f.key("a@b", Duration::from_secs(600)), Some(whole.clone()));
        }
    }

    #[test]
    fn sender_body_and_id_each_change_the_key() {
        let key = |m: &[u8], sender: &str| {
            let mut f = Fingerprint::new();
            f.update(m);
            f.key(sender, Duration::from_secs(600)).map(|k| k.hash)
        };
        let m = b"Message-ID: <1@x>\r\n\r\nhello\r\n";
        let base = key(m, "a@b").expect("key");
        assert_ne!(key(m, "c@d"), Some(base));
        assert_ne!(
            key(b"Message-ID: <1@x>\r\n\r\nhello!\r\n", "a@b"),
            Some(base)
        );
        assert_ne!(
            key(b"Message-ID: <2@x>\r\n\r\nhello\r\n", "a@b"),
            Some(base)
        );
        assert_eq!(key(m, "a@b"), Some(base));
        // Off: no key at all.
        let mut f = Fingerprint::new();
        f.update(m);
        assert_eq!(f.key("a@b", Duration::ZERO), None);
    }
}

//! Validated newtypes for values that are easy to confuse or to get subtly wrong: message numbers
//! that cannot be zero, unique-ids that cannot hold a character RFC 1939 forbids, and passwords
//! that cannot end up in a log through `Debug`.

use std::fmt;
use std::num::NonZeroU32;

use crate::limits::MAX_UID_LEN;

/// A message number as the client sees it: 1-based and fixed for the session.
///
/// Not a bare `u32`, so that `RETR 0` cannot quietly become message 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct MsgNum(NonZeroU32);

impl MsgNum {
    /// The message number `n`, or `None` for 0.
    pub fn new(n: u32) -> Option<MsgNum> {
        NonZeroU32::new(n).map(MsgNum)
    }

    /// The number as the client wrote it (1 or more).
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The 0-based position of this message in the session's message list (`n - 1`).
    pub fn index(self) -> usize {
        // Only a 16-bit target could fail this; an index of usize::MAX is then simply not found.
        usize::try_from(self.0.get() - 1).unwrap_or(usize::MAX)
    }

    /// The message number of the 0-based position `i` (`i + 1`), or `None` if that does not fit a `u32`.
    pub fn from_index(i: usize) -> Option<MsgNum> {
        u32::try_from(i)
            .ok()
            .and_then(|i| i.checked_add(1))
            .and_then(MsgNum::new)
    }
}

impl fmt::Display for MsgNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A unique-id as RFC 1939 §7 allows it: 1 to 70 characters, each in 0x21..=0x7E.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Uid(String);

impl Uid {
    /// Checks `s` against RFC 1939's length and character range.
    pub fn new(s: impl Into<String>) -> Result<Uid, InvalidUid> {
        let s = s.into();
        let valid =
            (1..=MAX_UID_LEN).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7E).contains(&b));
        if valid { Ok(Uid(s)) } else { Err(InvalidUid) }
    }

    /// The unique-id as it goes on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Uid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string was rejected as a unique-id because of its length or one of its characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
#[error("a unique-id must be 1 to 70 characters, each from 0x21 to 0x7E")]
pub struct InvalidUid;

/// The argument of PASS: raw bytes, since RFC 1939 does not promise UTF-8 and spaces are part of it.
///
/// `PartialEq` compares in variable time and exists for tests and parsing checks; check a
/// credential with a password hash, never with `==`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    /// Wraps the bytes the client sent after `PASS `.
    pub fn new(bytes: Vec<u8>) -> Self {
        Password(bytes)
    }

    /// The password bytes, for hashing.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    // Commands get logged with `{:?}`; the password must not come along.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn msg_num_rejects_zero() {
        assert_eq!(MsgNum::new(0), None);
        assert_eq!(MsgNum::new(1).map(MsgNum::get), Some(1));
        assert_eq!(MsgNum::new(u32::MAX).map(MsgNum::get), Some(u32::MAX));
    }

    #[test]
    fn msg_num_index_is_zero_based() {
        let one = MsgNum::new(1).unwrap();
        assert_eq!(one.index(), 0);
        assert_eq!(MsgNum::from_index(0), Some(one));
        assert_eq!(MsgNum::from_index(4).map(MsgNum::get), Some(5));
        assert_eq!(
            MsgNum::from_index(u32::MAX as usize - 1).map(MsgNum::get),
            Some(u32::MAX)
        );
        assert_eq!(MsgNum::from_index(u32::MAX as usize), None);
    }

    #[test]
    fn msg_num_display_and_order() {
        let seven = MsgNum::new(7).unwrap();
        assert_eq!(seven.to_string(), "7");
        assert!(MsgNum::new(2).unwrap() < seven);
    }

    #[test]
    fn uid_accepts_the_rfc_range() {
        assert_eq!(Uid::new("a").unwrap().as_str(), "a");
        assert_eq!(Uid::new("!~").unwrap().to_string(), "!~");
        assert!(Uid::new("x".repeat(70)).is_ok());
        let printable: String = (0x21u8..=0x7E).map(char::from).take(70).collect();
        assert!(Uid::new(printable).is_ok());
    }

    #[test]
    fn uid_rejects_outside_the_rfc_range() {
        for bad in ["", "a b", "a\tb", "\u{7f}", "é", "a\r\n"] {
            assert_eq!(Uid::new(bad), Err(InvalidUid), "{bad:?}");
        }
        assert_eq!(Uid::new("x".repeat(71)), Err(InvalidUid));
        assert_eq!(
            InvalidUid.to_string(),
            "a unique-id must be 1 to 70 characters, each from 0x21 to 0x7E"
        );
    }

    #[test]
    fn password_debug_is_redacted() {
        let pw = Password::new(b"hunter2".to_vec());
        assert_eq!(format!("{pw:?}"), "Password(<redacted>)");
        assert_eq!(pw.as_bytes(), b"hunter2");
    }

    proptest! {
        #[test]
        fn msg_num_index_round_trips(n in 1u32..) {
            let m = MsgNum::new(n).unwrap();
            prop_assert_eq!(MsgNum::from_index(m.index()), Some(m));
        }

        #[test]
        fn uid_validity_matches_the_rule(s in "[\\x00-\\x7f é]{0,80}") {
            let expected = !s.is_empty() && s.len() <= 70 && s.bytes().all(|b| (0x21..=0x7E).contains(&b));
            prop_assert_eq!(Uid::new(s.clone()).is_ok(), expected);
        }
    }
}

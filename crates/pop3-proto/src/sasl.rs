//! The wire side of SASL `AUTH` (RFC 5034): the command's arguments, the client's response lines
//! during an exchange, and nothing about any mechanism. Responses are base64 (RFC 4648, padded);
//! `=` is an empty initial response and `*` cancels the exchange.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::command::{Command, ParseError};

/// Decoded bytes a client sent in an `AUTH` exchange. They may hold a password, so `Debug` does
/// not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslResponse(Vec<u8>);

impl SaslResponse {
    /// Wraps decoded response bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The decoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SaslResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SaslResponse(<redacted>)")
    }
}

/// Why a client's line in an `AUTH` exchange ended it.
#[non_exhaustive]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
pub enum SaslLineError {
    /// The client sent `*`: it gives up on this exchange (RFC 5034 §4).
    #[error("authentication cancelled")]
    Cancelled,
    /// The client sent a line that is not padded base64.
    #[error("invalid base64")]
    InvalidBase64,
}

/// Parses a client's line sent after a `+ ` challenge: `*` cancels, anything else must be
/// base64 (an empty line is an empty response).
pub fn parse_sasl_line(line: &[u8]) -> Result<SaslResponse, SaslLineError> {
    let line = line.trim_ascii();
    if line == b"*" {
        return Err(SaslLineError::Cancelled);
    }
    STANDARD
        .decode(line)
        .map(SaslResponse)
        .map_err(|_| SaslLineError::InvalidBase64)
}

/// `bytes` as a challenge line's payload.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The arguments of `AUTH` (already split on blanks): none lists the mechanisms; a mechanism
/// name (RFC 4422 §3.1: 1-20 of `A-Z 0-9 - _`, taken case-insensitively, given upper case);
/// optionally followed by an initial response, where `=` is an empty one.
pub(crate) fn parse_auth(args: &[&[u8]]) -> Result<Command, ParseError> {
    let (mechanism, initial) = match args {
        [] => {
            return Ok(Command::Auth {
                mechanism: None,
                initial: None,
            });
        }
        [mechanism] => (mechanism, None),
        [mechanism, initial] => (mechanism, Some(*initial)),
        _ => return Err(ParseError::TooManyArguments),
    };
    let valid = (1..=20).contains(&mechanism.len())
        && mechanism
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    if !valid {
        return Err(ParseError::InvalidArgument);
    }
    let mechanism = String::from_utf8_lossy(mechanism).to_ascii_uppercase();
    let initial = match initial {
        None => None,
        Some(b"=") => Some(SaslResponse(Vec::new())),
        Some(b"*") => return Err(ParseError::InvalidBase64),
        Some(text) => Some(
            parse_sasl_line(text)
                .ok()
                .filter(|_| !text.is_empty())
                .ok_or(ParseError::InvalidBase64)?,
        ),
    };
    Ok(Command::Auth {
        mechanism: Some(mechanism),
        initial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::parse_line;

    fn auth(mechanism: Option<&str>, initial: Option<&[u8]>) -> Command {
        Command::Auth {
            mechanism: mechanism.map(str::to_owned),
            initial: initial.map(|b| SaslResponse(b.to_vec())),
        }
    }

    #[test]
    fn auth_lines() {
        let cases: Vec<(&[u8], Result<Command, ParseError>)> = vec![
            (b"AUTH", Ok(auth(None, None))),
            // Outlook sends a trailing space.
            (b"AUTH ", Ok(auth(None, None))),
            (b"auth", Ok(auth(None, None))),
            (b"AUTH PLAIN", Ok(auth(Some("PLAIN"), None))),
            (b"auth plain", Ok(auth(Some("PLAIN"), None))),
            (
                b"AUTH SCRAM-SHA-256 ",
                Ok(auth(Some("SCRAM-SHA-256"), None)),
            ),
            (b"AUTH LOGIN", Ok(auth(Some("LOGIN"), None))),
            (b"AUTH PLAIN =", Ok(auth(Some("PLAIN"), Some(b"")))),
            (
                b"AUTH PLAIN AGpvaG4Ac2VjcmV0",
                Ok(auth(Some("PLAIN"), Some(b"\0john\0secret"))),
            ),
            (
                b"AUTH PLAIN\tAGpvaG4Ac2VjcmV0 ",
                Ok(auth(Some("PLAIN"), Some(b"\0john\0secret"))),
            ),
            (b"AUTH X_Y-1", Ok(auth(Some("X_Y-1"), None))),
            (
                b"AUTH PLAIN AGpvaG4Ac2VjcmV0=",
                Err(ParseError::InvalidBase64),
            ),
            (b"AUTH PLAIN !!!!", Err(ParseError::InvalidBase64)),
            (
                b"AUTH PLAIN AGpvaG4Ac2VjcmV",
                Err(ParseError::InvalidBase64),
            ),
            (b"AUTH PLAIN *", Err(ParseError::InvalidBase64)),
            (b"AUTH PLAIN a b", Err(ParseError::TooManyArguments)),
            (b"AUTH PL@IN", Err(ParseError::InvalidArgument)),
            (
                b"AUTH ABCDEFGHIJKLMNOPQRSTU",
                Err(ParseError::InvalidArgument),
            ),
            (b"AUTH PL\xc3\xa9IN", Err(ParseError::InvalidArgument)),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse_line(line),
                expected,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn response_lines() {
        assert_eq!(parse_sasl_line(b"*"), Err(SaslLineError::Cancelled));
        assert_eq!(parse_sasl_line(b" * "), Err(SaslLineError::Cancelled));
        assert_eq!(parse_sasl_line(b""), Ok(SaslResponse(Vec::new())));
        assert_eq!(
            parse_sasl_line(b"dXNlcg=="),
            Ok(SaslResponse(b"user".to_vec()))
        );
        assert_eq!(
            parse_sasl_line(b"dXNlcg"),
            Err(SaslLineError::InvalidBase64)
        );
        assert_eq!(parse_sasl_line(b"=="), Err(SaslLineError::InvalidBase64));
        assert_eq!(
            parse_sasl_line(b"d\xffNlcg=="),
            Err(SaslLineError::InvalidBase64)
        );
        assert_eq!(encode_base64(b"Username:"), "VXNlcm5hbWU6");
    }

    #[test]
    fn responses_do_not_leak_through_debug() {
        let cmd = parse_line(b"AUTH PLAIN AGpvaG4Ac2VjcmV0").unwrap();
        assert_eq!(
            format!("{cmd:?}"),
            "Auth { mechanism: Some(\"PLAIN\"), initial: Some(SaslResponse(<redacted>)) }"
        );
    }
}

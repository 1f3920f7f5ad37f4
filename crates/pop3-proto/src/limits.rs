//! Protocol limits, each from the RFC that sets it, so the framer, the parser and the reply
//! encoder agree on one number.

/// Longest command line a client may send, counting the terminating CRLF (RFC 2449 §4).
pub const MAX_COMMAND_LINE: usize = 255;

/// Longest status line a server may send, counting the terminating CRLF (RFC 2449 §4).
pub const MAX_REPLY_LINE: usize = 512;

/// Longest unique-id in a UIDL reply (RFC 1939 §7, UIDL).
pub const MAX_UID_LEN: usize = 70;

/// Longest SASL client response line (a continuation in an `AUTH` exchange), counting the CRLF.
/// RFC 2449's 255 octets bind command lines, `AUTH` with an initial response included; RFC 5034
/// §4 sets no such limit on the base64 lines a client sends after a `+ ` challenge, so a server
/// must take longer ones. 12 KiB holds an OAUTHBEARER/XOAUTH2 message with a bearer token of
/// up to 8 KiB (Microsoft's access tokens run past 2.5 KiB, and grow with group claims), and so
/// anything PLAIN or SCRAM-SHA-256 sends.
pub const MAX_SASL_LINE: usize = 12 * 1024;

//! Protocol limits, each from the RFC that sets it, so the framer, the parser and the reply
//! encoder agree on one number.

/// Longest command line a client may send, counting the terminating CRLF (RFC 2449 §4).
pub const MAX_COMMAND_LINE: usize = 255;

/// Longest status line a server may send, counting the terminating CRLF (RFC 2449 §4).
pub const MAX_REPLY_LINE: usize = 512;

/// Longest unique-id in a UIDL reply (RFC 1939 §7, UIDL).
pub const MAX_UID_LEN: usize = 70;

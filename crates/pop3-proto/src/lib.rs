//! The POP3 wire format (RFC 1939, with RFC 2449 CAPA and limits and RFC 3206 response codes), and
//! nothing else: no I/O, no async, so every rule can be tested on bytes alone. [`limits`] holds the
//! line and unique-id limits with the RFC that sets each; `types` holds the validated newtypes
//! ([`MsgNum`], [`Uid`], [`Password`]) that keep a zero message number or a bad unique-id from
//! existing at all; `framing` cuts the client's byte stream into command lines ([`LineBuffer`]) and
//! throws away over-long ones without disturbing the next; `command` turns one line into a
//! [`Command`] ([`parse_line`]); `reply` is the one place that writes status lines and multi-line
//! replies ([`Reply`], [`encode`]); `body` streams a stored message out for RETR and TOP with
//! dot-stuffing and the terminating line ([`BodyEncoder`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// A server path must never take the connection down; tests may.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod body;
mod command;
mod framing;
pub mod limits;
mod reply;
mod sasl;
mod types;

pub use body::BodyEncoder;
pub use command::{ApopDigest, Command, LanguageRange, ParseError, parse_line};
pub use framing::{LineBuffer, LineTooLong};
pub use reply::{Reply, RespCode, encode, encode_listing, encode_listing_end, encode_listing_line};
pub use sasl::{SaslLineError, SaslResponse, encode_base64, parse_sasl_line};
pub use types::{InvalidUid, MsgNum, Password, Uid};

//! LMTP delivery in (RFC 2033). `command` parses command lines; `data` decodes the DATA stream
//! (dot-unstuffing, CRLF normalisation) without holding the message; `dedup` names a message
//! for the store's deduplication of MTA retries while it streams; `session` runs one
//! connection and writes bodies to the store in chunks; `server` accepts connections.

mod command;
mod data;
mod dedup;
mod server;
mod session;

pub use data::DataDecoder;
pub use server::{Config, run};
pub use session::quota_reply;

//! Accepting TCP connections for a protocol frontend (POP3, LMTP). `serve` owns the accept loop:
//! a cap on concurrent connections (over-cap clients get the caller's busy line), one task per
//! connection, and graceful shutdown (stop accepting, let handlers finish for a grace period,
//! then tell the rest to go through an abort token and wait for them). Before a handler runs,
//! the connection is admitted under the listener's `ProxyPolicy`: `proxy` reads PROXY protocol
//! v1/v2 headers from trusted networks (`network` is the CIDR type), so the handler sees the real
//! client's address; `stream` refuses such a header from anyone else. The protocol itself
//! (greeting, spans, sessions) stays with the caller.

mod accept;
mod network;
pub mod proxy;
mod stream;

pub use accept::{Conn, Options, ProxyPolicy, serve};
pub use network::{Network, NetworkError, is_loopback_or_in};
pub use stream::Stream;

//! The POP3 frontend. `server` accepts connections (connection cap, lease renewal, graceful
//! shutdown); `session` runs one connection through AUTHORIZATION → TRANSACTION → UPDATE;
//! `maildrop` is a locked maildrop as one session sees it; `lease` the leases this server's
//! sessions hold, which renewal may find lost; `stream` is the plain-or-TLS connection;
//! `observe` holds the metrics, the session tallies for the logout summary, and the per-address
//! limit before login. Wire format comes from `pop3-proto`,
//! storage from `mailstore`, logins from `tenancy`.

mod lease;
mod maildrop;
pub mod observe;
mod server;
mod session;
mod stream;

pub use server::{Config, Services, run, run_with_pop3s};
pub use session::WRITE_AFTER_ABORT;

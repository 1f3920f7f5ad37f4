//! The POP3 frontend. `server` accepts connections (connection cap, lease renewal, graceful
//! shutdown); `session` runs one connection through AUTHORIZATION → TRANSACTION → UPDATE;
//! `maildrop` is a locked maildrop as one session sees it. Wire format comes from `pop3-proto`,
//! storage from `mailstore`, logins from `tenancy`.

mod maildrop;
mod server;
mod session;

pub use server::{Config, Services, run};

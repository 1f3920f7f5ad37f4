//! The services an MTA (Postfix, Exim) asks pophost, so that pophost is the one source of truth
//! for the accounts it hosts: SMTP AUTH over the Dovecot authentication protocol (`auth`), the
//! hosted domains and mailboxes as a Postfix socketmap (`socketmap`), and the quota check at
//! RCPT as a Postfix policy service (`policy`). Each handler runs on any byte stream, so the same
//! code serves a TCP listener and a UNIX socket (`serve`).

pub mod auth;
pub mod policy;
pub mod serve;
pub mod socketmap;

//! End-to-end tests: the real `pophost` binary on a real SQLite file or Postgres database
//! (`POPHOST_TEST_BACKEND=postgres`; the scale-out tests always use Postgres), driven over TCP by raw
//! POP3/LMTP bytes and by real mail clients from Debian. One binary for the folder so it
//! compiles once; each test starts its own server on port 0.

mod accounts;
mod activity;
mod admin;
mod admin_ui;
mod admins;
mod alarm;
mod apop;
mod app_passwords;
mod bin;
mod browser;
mod bulletins;
mod capa;
mod clients;
mod crash;
mod cutover;
mod dedup;
mod defence;
mod deploy;
mod dovecot;
mod failover;
mod first_login;
mod generate;
mod harness;
mod helpdesk;
mod import;
mod large;
mod legacy;
mod lmtp;
mod logins;
mod migrate;
mod oauth;
mod ops;
mod pgbouncer;
mod policies;
mod pop3;
mod postfix;
mod proxy;
mod sasl;
mod scaleout;
mod self_service;
mod tls;
mod traces;
mod utf8;

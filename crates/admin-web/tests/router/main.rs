//! Router tests: every route through `oneshot`, against a real SQLite file.

mod activity;
mod admins;
mod alarms;
mod api;
mod bin;
mod bulletins;
mod core;
mod dashboard;
mod domains;
mod helpdesk;
mod import;
mod matrix;
mod policies;
mod signin;
mod support;
mod traces;
mod users;

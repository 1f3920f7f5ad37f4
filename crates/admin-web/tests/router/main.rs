//! Router tests: every route through `oneshot`, against a real SQLite file.

mod activity;
mod admins;
mod alarms;
mod api;
mod app_passwords;
mod bin;
mod bulletins;
mod core;
mod dashboard;
mod domains;
mod helpdesk;
mod import;
mod matrix;
mod oauth;
mod policies;
mod self_service;
mod signin;
mod support;
mod traces;
mod users;

//! Router tests: every route through `oneshot`, against a real SQLite file.

mod api;
mod core;
mod domains;
mod import;
mod matrix;
mod policies;
mod signin;
mod support;
mod users;

//! Router tests: every route through `oneshot`, against a real SQLite file.

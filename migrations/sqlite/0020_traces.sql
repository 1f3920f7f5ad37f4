-- Protocol traces (issue 21 item 5): an admin records one user's POP3 commands and first reply
-- lines for a while. Kept in the store so every frontend records into the same trace. A trace
-- records until `until_at` (or until stopped) and is deleted with its lines once `until_at`
-- has passed (retention job). Times are Unix milliseconds.
CREATE TABLE traces (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL UNIQUE REFERENCES users(id) ON DELETE CASCADE,
    started_by TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    until_at   INTEGER NOT NULL,
    stopped_at INTEGER NULL,
    -- Lines a frontend could not record (its queue was full).
    dropped    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX traces_by_until ON traces (until_at);

-- direction: 'C' (client) or 'S' (server). session: a per-connection id.
CREATE TABLE trace_lines (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id  INTEGER NOT NULL REFERENCES traces(id) ON DELETE CASCADE,
    session   TEXT NOT NULL,
    at        INTEGER NOT NULL,
    direction TEXT NOT NULL,
    text      TEXT NOT NULL
);
CREATE INDEX trace_lines_by_trace ON trace_lines (trace_id, id);

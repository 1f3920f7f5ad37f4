-- One row per running server (`pophost serve`) by its node_id, renewed every
-- locks.ttl_secs / 3. A server starting with a node_id must not free the maildrop locks and
-- pending bodies of a live server with the same node_id (a copied config): it takes the row
-- over only once `expires_at` has passed (a crashed server's), or when the row was made under
-- the serve lock file it now holds itself (`serve_lock`: its own previous run, dead since the
-- lock is free). `host` and `pid` name the holder in the refusal.
CREATE TABLE nodes (
    node        TEXT PRIMARY KEY,
    incarnation TEXT NOT NULL,
    serve_lock  TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

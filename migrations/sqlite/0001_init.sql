-- pophost schema, SQLite. Append-only: later changes go in new files.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- UIDs are "<uid_prefix>.<n>": the random prefix keeps them distinct from another install's
-- (mail migrated between stores keeps its UIDs), n comes from a counter that never goes back.
INSERT INTO meta (key, value) VALUES ('uid_prefix', lower(hex(randomblob(4))));

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('uid', 0), ('lock_token', 0);

CREATE TABLE domains (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL UNIQUE,
    quota_bytes    INTEGER,
    quota_messages INTEGER,
    used_bytes     INTEGER NOT NULL DEFAULT 0,
    used_messages  INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    domain_id      INTEGER NOT NULL REFERENCES domains(id),
    localpart      TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    quota_bytes    INTEGER,
    quota_messages INTEGER,
    used_bytes     INTEGER NOT NULL DEFAULT 0,
    used_messages  INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    UNIQUE (domain_id, localpart)
);

-- A delivered body, shared by every recipient of one delivery. pending_node is set while LMTP
-- is still writing it, so a restarted node can drop what its crashed run left half-written.
CREATE TABLE blobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    size         INTEGER NOT NULL DEFAULT 0,
    refs         INTEGER NOT NULL DEFAULT 0,
    pending_node TEXT,
    created_at   INTEGER NOT NULL
);

CREATE TABLE blob_chunks (
    blob_id INTEGER NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (blob_id, seq)
) WITHOUT ROWID;

CREATE TABLE messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    uid          TEXT NOT NULL,
    blob_id      INTEGER NOT NULL REFERENCES blobs(id),
    prefix       BLOB NOT NULL,
    size         INTEGER NOT NULL,
    delivered_at INTEGER NOT NULL,
    UNIQUE (user_id, uid)
);
CREATE INDEX messages_by_blob ON messages (blob_id);

-- The maildrop lock: one row per locked maildrop, a lease renewed by its holder.
CREATE TABLE maildrop_locks (
    user_id     INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    node        TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    token       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX maildrop_locks_by_incarnation ON maildrop_locks (incarnation);

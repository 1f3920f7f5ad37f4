-- pophost schema, Postgres. Append-only: later changes go in new files.
-- Kept behaviour-identical to migrations/sqlite; times are the database's clock, so frontends
-- with skewed clocks agree on when a maildrop lease expires.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- UIDs are "<uid_prefix>.<n>": the random prefix keeps them distinct from another install's,
-- n comes from a sequence that never goes back.
INSERT INTO meta (key, value) VALUES ('uid_prefix', substr(md5(random()::text || clock_timestamp()::text), 1, 8));

CREATE SEQUENCE message_uids;
CREATE SEQUENCE lock_tokens;

CREATE TABLE domains (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    quota_bytes    BIGINT,
    quota_messages BIGINT,
    used_bytes     BIGINT NOT NULL DEFAULT 0,
    used_messages  BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id             BIGSERIAL PRIMARY KEY,
    domain_id      BIGINT NOT NULL REFERENCES domains(id),
    localpart      TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    quota_bytes    BIGINT,
    quota_messages BIGINT,
    used_bytes     BIGINT NOT NULL DEFAULT 0,
    used_messages  BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (domain_id, localpart)
);

-- A delivered body, shared by every recipient of one delivery. pending_node is set while LMTP
-- is still writing it, so a restarted node can drop what its crashed run left half-written.
CREATE TABLE blobs (
    id           BIGSERIAL PRIMARY KEY,
    size         BIGINT NOT NULL DEFAULT 0,
    refs         BIGINT NOT NULL DEFAULT 0,
    pending_node TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX blobs_pending ON blobs (pending_node) WHERE pending_node IS NOT NULL;

-- Bodies in chunks, so RETR and delivery stream with bounded memory. STORAGE EXTERNAL: the
-- chunks are already small and mostly incompressible mail; skip the compression attempt.
CREATE TABLE blob_chunks (
    blob_id BIGINT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (blob_id, seq)
);
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE messages (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id),
    uid          TEXT NOT NULL,
    blob_id      BIGINT NOT NULL REFERENCES blobs(id),
    prefix       BYTEA NOT NULL,
    size         BIGINT NOT NULL,
    delivered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, uid)
);
CREATE INDEX messages_by_blob ON messages (blob_id);

-- The maildrop lock: one row per locked maildrop, a lease renewed by its holder.
CREATE TABLE maildrop_locks (
    user_id     BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    node        TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    token       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX maildrop_locks_by_incarnation ON maildrop_locks (incarnation);
CREATE INDEX maildrop_locks_by_node ON maildrop_locks (node);

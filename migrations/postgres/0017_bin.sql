-- The recycle bin (issue 21): a message deleted over POP3, by retention or by an admin moves here
-- for its domain's bin_days instead of vanishing, so the help desk can give it back. A separate
-- table, so the POP3 listing never reads or filters binned rows. The body stays referenced
-- (blobs.refs still counts a binned message) until the entry is purged.
--
-- delivered_at is as in messages (a timestamp), deleted_at Unix ms. origin: pop3, retention or
-- admin; for pop3, the session's lock token and its login (client address, mechanism, TLS).
-- counts_quota: the message was still counted in the usage counters when it was binned (the
-- domain's bin_counts_quota then), so a restore or purge puts the counters right whatever the
-- setting is by then.
CREATE TABLE binned_messages (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id),
    uid          TEXT NOT NULL,
    blob_id      BIGINT NOT NULL REFERENCES blobs(id),
    prefix       BYTEA NOT NULL,
    size         BIGINT NOT NULL,
    delivered_at TIMESTAMPTZ NOT NULL,
    deleted_at   BIGINT NOT NULL,
    origin       TEXT NOT NULL,
    session      BIGINT NULL,
    ip           TEXT NULL,
    mechanism    TEXT NULL,
    tls          BOOLEAN NULL,
    counts_quota BOOLEAN NOT NULL
);
CREATE INDEX binned_by_user ON binned_messages (user_id, deleted_at);
CREATE INDEX binned_by_age ON binned_messages (deleted_at);
CREATE INDEX binned_by_blob ON binned_messages (blob_id);

-- bin_days: how long binned messages are kept (0: deletes are final, as before the bin).
ALTER TABLE domains ADD COLUMN bin_days INTEGER NOT NULL DEFAULT 7;
ALTER TABLE domains ADD COLUMN bin_counts_quota BOOLEAN NOT NULL DEFAULT false;

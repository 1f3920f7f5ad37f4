-- LMTP deduplication (issue 21 item 2): the deliveries each mailbox got within the dedup window,
-- by key (SHA-256 over the Message-ID, the envelope sender and the digest of the DATA), so that
-- an MTA's retry of a delivery that was committed but never acknowledged stores nothing. Written
-- in the delivery's own transaction; the primary key makes two concurrent deliveries of one
-- message to one mailbox (from any frontends) store it once. expires_at is Unix milliseconds;
-- the retention job deletes expired rows (a full scan per run, cheaper overall than an index
-- every delivery would have to maintain).
CREATE TABLE delivery_keys (
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    digest     BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, digest)
);

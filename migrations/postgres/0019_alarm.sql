-- Re-download alarms (issue 21, item 3): the help desk's early warning for "my mail is gone".
--
-- first_retrieved: Unix milliseconds of the end of the first session that retrieved the message
-- in full (RETR); set once, in the session's ending transaction. A later session retrieving a
-- message that has it retrieves it again: a client that lost or never had the UIDLs.
ALTER TABLE messages ADD COLUMN first_retrieved BIGINT NULL;

-- The last session whose deletions were all of mail delivered seconds before (Unix ms, client
-- address): a second address doing the same within the hour means two clients deleting on
-- arrival, each taking mail the other never sees.
ALTER TABLE users ADD COLUMN quick_delete_at BIGINT NULL;
ALTER TABLE users ADD COLUMN quick_delete_ip TEXT NULL;

-- kind: redownload | quick_delete (names this version does not know are shown as they are).
-- count: the messages re-retrieved (redownload) or deleted (quick_delete) by the session.
-- previous_ip: for quick_delete, the other address that deleted on arrival.
CREATE TABLE alarms (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    domain_id   BIGINT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    ip          TEXT NULL,
    mechanism   TEXT NULL,
    previous_ip TEXT NULL
);
CREATE INDEX alarms_by_user ON alarms (user_id, at);
CREATE INDEX alarms_by_domain ON alarms (domain_id, at);
CREATE INDEX alarms_by_at ON alarms (at);

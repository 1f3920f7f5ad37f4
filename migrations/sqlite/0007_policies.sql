-- Mailbox policies per domain (issue 6): what happens when a quota is reached (permanent 552
-- or temporary 452), the usage percentage that sends a one-time warning, retention (messages
-- older than retention_days are deleted by the background job; CAPA EXPIRE advertises it) and
-- LOGIN-DELAY. NULL means none.
ALTER TABLE domains ADD COLUMN quota_tempfail INTEGER NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN quota_warn_percent INTEGER NULL DEFAULT 90;
ALTER TABLE domains ADD COLUMN retention_days INTEGER NULL;
ALTER TABLE domains ADD COLUMN login_delay_secs INTEGER NULL;
-- quota_warned: the warning notice was sent and usage has not dropped below the threshold
-- since, so it is sent once per crossing. last_login_at: Unix ms of the last successful login.
ALTER TABLE users ADD COLUMN quota_warned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_login_at INTEGER NULL;
-- Imported messages remember where they came from (e.g. "maildir:<base name>"), so importing
-- the same folder again adds nothing.
ALTER TABLE messages ADD COLUMN import_key TEXT NULL;
CREATE UNIQUE INDEX messages_by_import_key ON messages (user_id, import_key)
    WHERE import_key IS NOT NULL;
-- The retention job looks for old messages.
CREATE INDEX messages_by_age ON messages (delivered_at);

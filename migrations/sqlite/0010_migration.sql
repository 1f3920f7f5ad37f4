-- Moving an ISP in (issue "Migration"). `password_scheme` names the scheme of a password hash
-- imported from another server (Dovecot's name: SHA512-CRYPT, BLF-CRYPT, …), NULL for
-- pophost's own argon2id; a login that verifies against a legacy hash replaces it with
-- argon2id and clears it. The partial index keeps "how many accounts still hold each legacy
-- scheme" (dashboard, /metrics) cheap once most accounts have logged in.
ALTER TABLE users ADD COLUMN password_scheme TEXT;
CREATE INDEX users_legacy_scheme ON users (password_scheme) WHERE password_scheme IS NOT NULL;
-- A domain in migration mode names its old POP3 server; a user of it whose mail has not been
-- pulled from there yet (`migrated_at` NULL) is checked against and pulled from that server at
-- their first login.
ALTER TABLE domains ADD COLUMN migrate_from TEXT;
ALTER TABLE users ADD COLUMN migrated_at INTEGER;

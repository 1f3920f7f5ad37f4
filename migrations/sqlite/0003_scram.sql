-- SCRAM-SHA-256 (RFC 7677): a verifier derived when the password is set, beside the argon2
-- hash, in Postgres' format SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>.
-- NULL for users whose password was set before: they can log in with USER/PASS, PLAIN and
-- LOGIN, not SCRAM, until `pophost user passwd`.
ALTER TABLE users ADD COLUMN scram_verifier TEXT NULL;

-- APOP (RFC 1939 section 7): a per-user shared secret, encrypted under the server's APOP key
-- (base64 of nonce || ciphertext, the user id as associated data; never plaintext), and a
-- per-domain switch that allows it. Both off by default.
ALTER TABLE users ADD COLUMN apop_secret TEXT NULL;
ALTER TABLE domains ADD COLUMN allow_apop INTEGER NOT NULL DEFAULT 0;

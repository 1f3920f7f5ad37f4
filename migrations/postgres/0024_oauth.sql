-- OAuth 2.0 sign-in per domain (issue 22, item 3): the identity provider whose bearer tokens
-- log the domain's users in. Exactly one of jwks_url and jwks_file is set. algorithms is a
-- comma-separated subset of RS256, ES256, EdDSA. updated_at: Unix milliseconds.
CREATE TABLE domain_oauth (
    domain_id  BIGINT PRIMARY KEY REFERENCES domains(id) ON DELETE CASCADE,
    issuer     TEXT NOT NULL,
    jwks_url   TEXT NULL,
    jwks_file  TEXT NULL,
    audience   TEXT NOT NULL,
    claim      TEXT NOT NULL,
    algorithms TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK ((jwks_url IS NULL) <> (jwks_file IS NULL))
);

-- The admin UI: admin accounts (super, or scoped to domains), their browser sessions (by the
-- hash of the cookie value), API tokens (by the hash of the secret), the audit log, hourly
-- activity for the dashboard, and the per-domain and per-user switches the UI edits.
ALTER TABLE domains ADD COLUMN max_users BIGINT NULL;
ALTER TABLE domains ADD COLUMN enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE users ADD COLUMN enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE maildrop_locks ADD COLUMN locked_at TIMESTAMPTZ NOT NULL DEFAULT now();

CREATE TABLE admins (
    id            BIGSERIAL PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_super      BOOLEAN NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE admin_domains (
    admin_id  BIGINT NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    domain_id BIGINT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    PRIMARY KEY (admin_id, domain_id)
);

CREATE TABLE admin_sessions (
    id_hash    TEXT PRIMARY KEY,
    admin_id   BIGINT NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id         BIGSERIAL PRIMARY KEY,
    admin_id   BIGINT NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used  BIGINT NULL
);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    object  TEXT NOT NULL,
    domain  TEXT NULL,
    before  TEXT NULL,
    after   TEXT NULL,
    ip      TEXT NULL,
    success BOOLEAN NOT NULL
);
CREATE INDEX audit_log_by_domain ON audit_log (domain, id);

-- hour = Unix time / 3600. Deliveries are counted in the delivery transaction, logins in the
-- one that takes the maildrop lock: no extra write per event.
CREATE TABLE hourly_stats (
    hour      BIGINT NOT NULL,
    domain_id BIGINT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    delivered BIGINT NOT NULL DEFAULT 0,
    logins    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, domain_id)
);

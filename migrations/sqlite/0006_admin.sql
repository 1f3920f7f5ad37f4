-- The admin UI: admin accounts (super, or scoped to domains), their browser sessions (by the
-- hash of the cookie value), API tokens (by the hash of the secret), the audit log, hourly
-- activity for the dashboard, and the per-domain and per-user switches the UI edits.
ALTER TABLE domains ADD COLUMN max_users INTEGER NULL;
ALTER TABLE domains ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE maildrop_locks ADD COLUMN locked_at INTEGER NOT NULL DEFAULT 0;

CREATE TABLE admins (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_super      INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE admin_domains (
    admin_id  INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    PRIMARY KEY (admin_id, domain_id)
);

CREATE TABLE admin_sessions (
    id_hash    TEXT PRIMARY KEY,
    admin_id   INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    admin_id   INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_used  INTEGER NULL
);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    object  TEXT NOT NULL,
    domain  TEXT NULL,
    before  TEXT NULL,
    after   TEXT NULL,
    ip      TEXT NULL,
    success INTEGER NOT NULL
);
CREATE INDEX audit_log_by_domain ON audit_log (domain, id);

-- hour = Unix time / 3600. Deliveries are counted in the delivery transaction, logins in the
-- one that takes the maildrop lock: no extra write per event.
CREATE TABLE hourly_stats (
    hour      INTEGER NOT NULL,
    domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    delivered INTEGER NOT NULL DEFAULT 0,
    logins    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, domain_id)
);

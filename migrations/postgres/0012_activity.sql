-- What a customer did (issue "Admin UI"): every POP3 login, successful or not, with where it came
-- from and how; per user and day what was retrieved and deleted; when mail last arrived. Kept in
-- the store so every frontend writes and every admin page reads the same history; the
-- retention job prunes rows older than `activity.keep_days`.
--
-- user_id is NULL when the login named no existing user (domain_id then says whose domain was
-- tried, when the domain exists). reason: why a failure failed (wrong_password, disabled,
-- login_form, login_delay, unknown_user, throttled, …); NULL for a success.
CREATE TABLE login_events (
    id        BIGSERIAL PRIMARY KEY,
    user_id   BIGINT NULL REFERENCES users(id) ON DELETE CASCADE,
    domain_id BIGINT NULL REFERENCES domains(id) ON DELETE CASCADE,
    at        BIGINT NOT NULL,
    ip        TEXT NULL,
    mechanism TEXT NOT NULL,
    tls       BOOLEAN NOT NULL,
    success   BOOLEAN NOT NULL,
    reason    TEXT NULL,
    -- A success's maildrop lock token: the live session it started (see live_sessions).
    token     BIGINT NULL
);
CREATE INDEX login_events_by_user ON login_events (user_id, at);
CREATE INDEX login_events_by_domain ON login_events (domain_id, at);
CREATE INDEX login_events_by_at ON login_events (at);

-- day = Unix time / 86400.
CREATE TABLE user_daily_stats (
    user_id         BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    day             BIGINT NOT NULL,
    retrieved       BIGINT NOT NULL DEFAULT 0,
    retrieved_bytes BIGINT NOT NULL DEFAULT 0,
    deleted         BIGINT NOT NULL DEFAULT 0,
    deleted_bytes   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);

-- Unix milliseconds of the last delivery, set in the delivery transaction.
ALTER TABLE users ADD COLUMN last_delivery BIGINT NULL;

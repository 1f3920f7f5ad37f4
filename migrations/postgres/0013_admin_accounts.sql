-- Admin accounts a help desk can manage (issue "Admin UI", item 1): an admin can be disabled
-- (no sign-in, no token) without losing their history, and the list shows when and from where
-- each last signed in. API tokens can expire (NULL: never) and can be limited to reading.
ALTER TABLE admins ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE admins ADD COLUMN last_signin_at BIGINT NULL;
ALTER TABLE admins ADD COLUMN last_signin_ip TEXT NULL;

ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT NULL;
ALTER TABLE api_tokens ADD COLUMN read_only BOOLEAN NOT NULL DEFAULT FALSE;

-- "My account" lists an admin's own sign-ins from the audit log, by actor and action.
CREATE INDEX audit_log_by_actor ON audit_log (actor, action, id);

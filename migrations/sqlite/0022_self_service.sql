-- The self-service page (issue 22, item 2): a user signs in at /me with their address and main
-- password to change it, see their logins, restore from their bin and manage app passwords.
-- Off by default: a domain opts in.
ALTER TABLE domains ADD COLUMN self_service INTEGER NOT NULL DEFAULT 0;

-- A signed-in user's sessions, apart from admin_sessions: a user session can never be read as
-- an admin's. Only the SHA-256 of the cookie's id is kept; the user's deletion takes them along.
CREATE TABLE user_sessions (
    id_hash    TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE INDEX user_sessions_by_user ON user_sessions (user_id);

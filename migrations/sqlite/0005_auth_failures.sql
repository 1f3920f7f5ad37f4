-- Failed logins, for the brute-force defence shared by every frontend: one row per failure and
-- key ("ip:<address or /64>" or "account:<user@domain>"); rows older than an hour are pruned.
CREATE TABLE auth_failures (
    key TEXT NOT NULL,
    at  INTEGER NOT NULL
);
CREATE INDEX auth_failures_by_key ON auth_failures (key, at);
CREATE INDEX auth_failures_by_time ON auth_failures (at);

-- The dashboard's top lists (issue "Admin UI", item 6) with 100,000 users in a domain: the
-- biggest mailboxes are read from the top of an index instead of sorting every user, service
-- wide (super admins) and per domain (domain admins). Successful logins (the ranking reads the
-- range's most recent ones backwards) and failed logins (per hour) are each one contiguous part
-- of one covering index, so neither reads the table or the other outcome's rows.
CREATE INDEX users_by_usage ON users (used_bytes, id);
CREATE INDEX users_by_domain_usage ON users (domain_id, used_bytes, id);
CREATE INDEX login_events_by_outcome ON login_events (success, at, user_id, domain_id);
-- A domain's page and the domains list count its migrated users: without this partial index
-- that count read every user row of the domain (about 300 ms for 100,000 users on SQLite).
CREATE INDEX users_migrated ON users (domain_id) WHERE migrated_at IS NOT NULL;

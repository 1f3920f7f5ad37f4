-- The dashboard's failed logins per hour (issue "Admin UI", item 6) read per-hour counters
-- written with each failure, as `hourly_stats.logins` counts successes, instead of counting every
-- failure of a 7- or 30-day range in `login_events`. A failure in a known domain (the one tried,
-- or the named user's) counts on that domain's row; one that names no known domain counts in
-- `hourly_failures`, which only super admins see.
ALTER TABLE hourly_stats ADD COLUMN failed_logins BIGINT NOT NULL DEFAULT 0;
CREATE TABLE hourly_failures (
    hour   BIGINT PRIMARY KEY,
    failed BIGINT NOT NULL DEFAULT 0
);
INSERT INTO hourly_stats (hour, domain_id, failed_logins)
SELECT le.at / 3600000, coalesce(le.domain_id, u.domain_id), count(*)
FROM login_events le LEFT JOIN users u ON u.id = le.user_id
WHERE le.success = FALSE AND coalesce(le.domain_id, u.domain_id) IS NOT NULL
GROUP BY 1, 2
ON CONFLICT (hour, domain_id) DO UPDATE SET failed_logins = EXCLUDED.failed_logins;
INSERT INTO hourly_failures (hour, failed)
SELECT le.at / 3600000, count(*)
FROM login_events le LEFT JOIN users u ON u.id = le.user_id
WHERE le.success = FALSE AND le.domain_id IS NULL AND u.domain_id IS NULL
GROUP BY 1;

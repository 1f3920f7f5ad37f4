-- The same table as Postgres's (see its 0025): counters spread over 16 rows per hour and domain.
-- SQLite writes one transaction at a time, so this buys it nothing, but one SQL serves both.
CREATE TABLE hourly_stats_sharded (
    hour          INTEGER NOT NULL,
    domain_id     INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    shard         INTEGER NOT NULL DEFAULT 0,
    delivered     INTEGER NOT NULL DEFAULT 0,
    logins        INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, domain_id, shard)
);
INSERT INTO hourly_stats_sharded (hour, domain_id, delivered, logins, failed_logins)
SELECT hour, domain_id, delivered, logins, failed_logins FROM hourly_stats;
DROP TABLE hourly_stats;
ALTER TABLE hourly_stats_sharded RENAME TO hourly_stats;

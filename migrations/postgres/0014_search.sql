-- The admin search box finds users by a prefix of their local part (a range in byte order,
-- `COLLATE "C"`, whatever the database's collation): across every domain for super admins,
-- within their domains for domain admins.
CREATE INDEX users_by_localpart ON users (localpart COLLATE "C");
CREATE INDEX users_by_domain_localpart ON users (domain_id, localpart COLLATE "C");

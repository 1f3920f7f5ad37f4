-- The admin search box finds users by a prefix of their local part in every domain an admin may
-- see: an index range on the local part, in byte order (SQLite's BINARY collation), so a term
-- costs the rows it returns, not a scan of the users.
CREATE INDEX users_by_localpart ON users (localpart);

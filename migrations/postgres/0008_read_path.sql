-- Message bodies compressed with lz4 rather than pglz (PostgreSQL 14+ built with lz4, as
-- Debian's and the official images are): several times cheaper to compress at delivery and to
-- decompress at RETR, for a little more space. Only new bodies are affected. Where lz4 is not
-- available the column keeps the server's default, and nothing else changes.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE blob_chunks ALTER COLUMN data SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 is not available: message bodies keep the default compression';
END
$$;

-- A maildrop's listing (id, size, body, uid: what login reads for STAT, LIST and UIDL) from one
-- index in id order (an index-only scan once the table is vacuumed), without a sort.
CREATE INDEX messages_listing ON messages (user_id, id) INCLUDE (size, blob_id, uid);

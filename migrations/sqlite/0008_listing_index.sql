-- A maildrop's listing (id, size, body, uid: what login reads for STAT, LIST and UIDL) straight
-- from one index, in id order: no lookup into the table rows (which hold each message's
-- header block) and no sort. On a 50,000-message maildrop it is most of a login's time.
CREATE INDEX messages_listing ON messages (user_id, id, size, blob_id, uid);

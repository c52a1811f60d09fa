-- Message hashes are hex digests: compare them byte by byte. Under the database's default
-- collation (even C.UTF-8) every index lookup by hash went through strcoll(), the largest
-- item in PostgreSQL's profile of a FETCH of 50 headers. Indexes are rebuilt; rows stay.
ALTER TABLE blobs ALTER COLUMN hash TYPE TEXT COLLATE "C";
ALTER TABLE message_meta ALTER COLUMN hash TYPE TEXT COLLATE "C";
ALTER TABLE mailbox_messages ALTER COLUMN hash TYPE TEXT COLLATE "C";
ALTER TABLE queue_messages ALTER COLUMN hash TYPE TEXT COLLATE "C";
ALTER TABLE blob_faults ALTER COLUMN hash TYPE TEXT COLLATE "C";
ALTER TABLE message_text ALTER COLUMN hash TYPE TEXT COLLATE "C";
ALTER TABLE text_index ALTER COLUMN hash TYPE TEXT COLLATE "C";
ALTER TABLE search_unindexable ALTER COLUMN hash TYPE TEXT COLLATE "C";
ALTER TABLE search_backlog ALTER COLUMN hash TYPE TEXT COLLATE "C";

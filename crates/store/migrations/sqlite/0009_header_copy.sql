-- The top-level header block of each message beside its metadata, so that FETCH of header
-- fields and ENVELOPE need not read (and decompress) the whole body. NULL for messages stored
-- before, and for header blocks too large to copy: those are read from the body.
--
-- message_meta also becomes a rowid table. Its rows (the metadata JSON, now with the header
-- block) are far larger than SQLite advises for WITHOUT ROWID tables, and every lookup by hash
-- copied overflowing rows while it searched the B-tree; now the hash index is small and only
-- the row found is read.
CREATE TABLE message_meta_v9 (
    id          INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    size        INTEGER NOT NULL,
    subject     TEXT,
    from_addr   TEXT,
    message_id  TEXT,
    sent_date   INTEGER,
    meta        TEXT NOT NULL,
    header      BLOB
);
INSERT INTO message_meta_v9 (hash, size, subject, from_addr, message_id, sent_date, meta)
    SELECT hash, size, subject, from_addr, message_id, sent_date, meta FROM message_meta;
DROP TABLE message_meta;
ALTER TABLE message_meta_v9 RENAME TO message_meta;

-- Bodies become a rowid table, as message_meta did in 0009. As a WITHOUT ROWID table keyed
-- by a random hash, each row (a whole compressed body) sat in a B-tree leaf at a random place:
-- leaves split half empty (700 MB of pages for 515 MB of bodies), and every batch of new
-- bodies rewrote leaves all over the file, each one again in the WAL. Now bodies are appended
-- in the order they arrive, pages full, and only the hash index (a few dozen bytes a body) is
-- written at random places.
CREATE TABLE blobs_v14 (
    id          INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    size        INTEGER NOT NULL,
    compression INTEGER NOT NULL,
    data        BLOB NOT NULL,
    created     INTEGER NOT NULL
);
INSERT INTO blobs_v14 (hash, size, compression, data, created)
    SELECT hash, size, compression, data, created FROM blobs ORDER BY created, hash;
DROP TABLE blobs;
ALTER TABLE blobs_v14 RENAME TO blobs;

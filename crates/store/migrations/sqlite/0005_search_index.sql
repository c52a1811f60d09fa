-- IMAP SEARCH: each message's decoded text, and an FTS5 index of its n-grams (see search.rs).
CREATE TABLE message_text (
    id      INTEGER PRIMARY KEY,
    hash    TEXT NOT NULL UNIQUE,
    header  TEXT NOT NULL,
    body    TEXT NOT NULL
);
-- Contentless with detail=none: only which message has which gram, the smallest index FTS5 has.
CREATE VIRTUAL TABLE message_grams USING fts5(grams, content='', detail=none, tokenize='ascii');

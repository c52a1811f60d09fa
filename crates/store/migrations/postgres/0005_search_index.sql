-- IMAP SEARCH: each message's decoded text, and a GIN index of its n-grams (see search.rs).
CREATE TABLE message_text (
    hash    TEXT PRIMARY KEY,
    header  TEXT NOT NULL,
    body    TEXT NOT NULL,
    grams   TSVECTOR NOT NULL
);
CREATE INDEX message_text_grams ON message_text USING gin (grams);

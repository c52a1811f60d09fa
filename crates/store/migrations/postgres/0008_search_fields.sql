-- IMAP SEARCH index, second form (see search.rs): per field (body, Subject, From, To, Cc, Bcc,
-- other headers), the suffixes of every word, looked up by prefix. It answers a one-word needle
-- exactly, so common words no longer mean reading every text, and SUBJECT is not led to every
-- message whose body has the word. In its own narrow table, so that a hit costs a small row,
-- not one with the whole text. The n-gram column is dropped; every message is re-indexed in
-- the background from `search_backlog`, and until then checked against its text.
ALTER TABLE message_text DROP COLUMN grams;
-- `key` is the message's index key (the first 8 bytes of its hash, search::index_key), which
-- a hit returns. A second message with the same key (odds 2^-64 a pair) is not indexed but
-- listed in search_unindexable, as is a text with too many words to index
-- (search::MAX_TOKENS); both are always checked against their text.
-- toast_tuple_target: the token lists go out of line, so that the rows an index hit visits
-- stay narrow (key and hash) and a common word does not read every list.
CREATE TABLE text_index (
    key     BIGINT PRIMARY KEY,
    hash    TEXT NOT NULL UNIQUE,
    tokens  TSVECTOR NOT NULL
) WITH (toast_tuple_target = 128);
CREATE INDEX text_index_tokens ON text_index USING gin (tokens);
CREATE TABLE search_unindexable (hash TEXT PRIMARY KEY);
CREATE TABLE search_backlog (hash TEXT PRIMARY KEY);
INSERT INTO search_backlog SELECT hash FROM mailbox_messages ON CONFLICT DO NOTHING;
INSERT INTO search_backlog SELECT hash FROM message_text ON CONFLICT DO NOTHING;

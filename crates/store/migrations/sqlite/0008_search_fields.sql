-- IMAP SEARCH index, second form (see search.rs): per field (body, Subject, From, To, Cc, Bcc,
-- other headers), the suffixes of every word, looked up by prefix. It answers a one-word needle
-- exactly, so common words no longer mean reading every text, and SUBJECT is not led to every
-- message whose body has the word. The n-gram index is dropped; every message is re-indexed
-- in the background from `search_backlog`, and until then checked against its text.
DROP TABLE message_grams;
-- Its rowid is the message's index key (the first 8 bytes of its hash, search::index_key), so
-- that a hit names the message without a lookup.
CREATE VIRTUAL TABLE text_index USING fts5(tokens, content='', detail=none, tokenize='ascii');
-- Its terms, so that a prefix can be looked up as the few whole terms it stands for: FTS5
-- answers a whole term an order of magnitude faster than a prefix.
CREATE VIRTUAL TABLE text_index_vocab USING fts5vocab(text_index, 'row');
-- Which message holds each key; a second message with the same key (odds 2^-64 a pair) is not
-- indexed but listed in search_unindexable, as is a text with too many words to index
-- (search::MAX_TOKENS); both are always checked against their text.
CREATE TABLE text_index_keys (key INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE);
CREATE TABLE search_unindexable (hash TEXT PRIMARY KEY) WITHOUT ROWID;
-- Messages whose text is not in the index: the re-indexing above, and messages stored before
-- the index existed (which have no message_text row yet).
CREATE TABLE search_backlog (hash TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO search_backlog SELECT hash FROM mailbox_messages;
INSERT OR IGNORE INTO search_backlog SELECT hash FROM message_text;

-- Trimaran schema 1 (SQLite). Times are seconds since the epoch; hashes are BLAKE3 in hex.
CREATE TABLE domains (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    created     INTEGER NOT NULL
);

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    address       TEXT NOT NULL UNIQUE,
    domain_id     INTEGER NOT NULL REFERENCES domains(id),
    password_hash TEXT NOT NULL,
    -- The account's modification sequence: bumped by every mutation, in the same transaction.
    modseq        INTEGER NOT NULL DEFAULT 0,
    created       INTEGER NOT NULL
);

CREATE TABLE aliases (
    address     TEXT NOT NULL,
    target      TEXT NOT NULL,
    domain_id   INTEGER NOT NULL REFERENCES domains(id),
    created     INTEGER NOT NULL,
    PRIMARY KEY (address, target)
);

-- AUTOINCREMENT so a mailbox id is never reused: ids appear in change logs and backups.
CREATE TABLE mailboxes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    special_use   TEXT,
    uidvalidity   INTEGER NOT NULL,
    uidnext       INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 0,
    subscribed    INTEGER NOT NULL DEFAULT 1,
    created       INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE blobs (
    hash        TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    compression INTEGER NOT NULL,
    data        BLOB NOT NULL,
    created     INTEGER NOT NULL
) WITHOUT ROWID;

-- Parsed once at delivery, shared by every copy of the same bytes.
CREATE TABLE message_meta (
    hash        TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    subject     TEXT,
    from_addr   TEXT,
    message_id  TEXT,
    sent_date   INTEGER,
    meta        TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE mailbox_messages (
    mailbox_id    INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid           INTEGER NOT NULL,
    account_id    INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    flags         INTEGER NOT NULL DEFAULT 0,
    keywords      TEXT NOT NULL DEFAULT '',
    modseq        INTEGER NOT NULL,
    internal_date INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX mailbox_messages_hash ON mailbox_messages(hash);
CREATE INDEX mailbox_messages_modseq ON mailbox_messages(mailbox_id, modseq);

-- The per-account change feed (IMAP CONDSTORE/QRESYNC, POP3, JMAP /changes read it).
CREATE TABLE changes (
    account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    modseq      INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    mailbox_id  INTEGER,
    uid         INTEGER,
    at          INTEGER NOT NULL
);
CREATE INDEX changes_account_modseq ON changes(account_id, modseq);

CREATE TABLE queue_messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    hash         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sender       TEXT NOT NULL,
    submitted_by INTEGER,
    created      INTEGER NOT NULL
);
CREATE INDEX queue_messages_hash ON queue_messages(hash);

CREATE TABLE queue_recipients (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id     INTEGER NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,
    recipient    TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_error   TEXT,
    lease_owner  TEXT,
    lease_until  INTEGER
);
CREATE INDEX queue_recipients_due ON queue_recipients(status, next_attempt);

CREATE TABLE blob_faults (
    hash        TEXT PRIMARY KEY,
    detail      TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    count       INTEGER NOT NULL
) WITHOUT ROWID;

-- Ids of committed deliveries, so that a retry after an ambiguous commit (the connection broke
-- while COMMIT was in flight) finds its own earlier success instead of delivering twice.
CREATE TABLE deliveries (
    id          TEXT PRIMARY KEY,
    created     INTEGER NOT NULL
);
CREATE INDEX deliveries_created ON deliveries(created);

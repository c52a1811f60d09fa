-- IMAP mailbox management.
-- UIDVALIDITY values handed out per account, so that a mailbox deleted and created again gets a
-- new one (RFC 9051 §2.3.1.1) even within one second.
ALTER TABLE accounts ADD COLUMN last_uidvalidity BIGINT NOT NULL DEFAULT 0;

-- Subscriptions are names, not mailboxes: one may outlive its mailbox (RFC 9051 §6.3.7).
CREATE TABLE subscriptions (
    account_id  BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    PRIMARY KEY (account_id, name)
);
INSERT INTO subscriptions (account_id, name) SELECT account_id, name FROM mailboxes WHERE subscribed = 1;

-- Sessions ask for one mailbox's removals since a MODSEQ (IMAP EXPUNGE/VANISHED).
CREATE INDEX changes_mailbox_modseq ON changes(mailbox_id, modseq);

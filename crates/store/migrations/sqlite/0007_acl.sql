-- Mailbox sharing (IMAP ACL, RFC 4314): rights an account grants another on one of its
-- mailboxes. The owner's own rights are implicit and never stored. Rows go with the mailbox
-- and with the grantee's account.
CREATE TABLE mailbox_acl (
    mailbox_id  INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    grantee_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    rights      TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, grantee_id)
);
CREATE INDEX mailbox_acl_grantee ON mailbox_acl(grantee_id);

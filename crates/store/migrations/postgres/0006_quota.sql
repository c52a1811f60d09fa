-- Storage quotas (IMAP QUOTA, RFC 9208): per account, NULL for no limit.
ALTER TABLE accounts ADD COLUMN quota_storage BIGINT;
ALTER TABLE accounts ADD COLUMN quota_messages BIGINT;
-- Usage is summed per account when a quota is checked.
CREATE INDEX mailbox_messages_account ON mailbox_messages(account_id);

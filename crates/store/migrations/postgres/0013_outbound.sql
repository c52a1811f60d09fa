-- The outbound queue as the SMTP client needs it (issue 4).
-- Per message: the DSN envelope (RFC 3461 §4.3 ENVID, §4.4 RET), the body type and SMTPUTF8
-- (RFC 6152, RFC 3030, RFC 6531) so the client knows what the peer must support, and the
-- FUTURERELEASE time (RFC 4865), before which no recipient is attempted.
ALTER TABLE queue_messages ADD COLUMN envid TEXT;
ALTER TABLE queue_messages ADD COLUMN ret TEXT CHECK (ret IN ('FULL', 'HDRS'));
ALTER TABLE queue_messages ADD COLUMN body TEXT NOT NULL DEFAULT '7BIT'
    CHECK (body IN ('7BIT', '8BITMIME', 'BINARYMIME'));
ALTER TABLE queue_messages ADD COLUMN smtputf8 BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE queue_messages ADD COLUMN hold_until BIGINT NOT NULL DEFAULT 0;
-- Per recipient: NOTIFY (RFC 3461 §4.1; NULL = FAILURE,DELAY) and ORCPT (§4.2), whether the
-- delay notice went out, and the last peer that answered (the report's Remote-MTA).
-- status: 'pending' (to be sent); 'sent', 'relayed', 'delivered' or 'failed': settled, kept until
-- its report (RFC 3464) is made.
ALTER TABLE queue_recipients ADD COLUMN notify TEXT;
ALTER TABLE queue_recipients ADD COLUMN orcpt TEXT;
ALTER TABLE queue_recipients ADD COLUMN delay_notified BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE queue_recipients ADD COLUMN remote_mta TEXT;
ALTER TABLE queue_recipients ADD COLUMN settled BIGINT;
CREATE INDEX queue_recipients_message ON queue_recipients(queue_id);

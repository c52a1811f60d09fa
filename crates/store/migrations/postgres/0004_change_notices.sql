-- Every change to an account's mail bumps its MODSEQ; tell listening Trimaran processes which
-- account changed, so that IMAP IDLE in any process wakes up (NOTIFY is sent at commit, and
-- repeats within one transaction are folded into one).
CREATE FUNCTION trimaran_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trimaran_changes', NEW.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER accounts_modseq_notify AFTER UPDATE OF modseq ON accounts
    FOR EACH ROW EXECUTE FUNCTION trimaran_notify_change();

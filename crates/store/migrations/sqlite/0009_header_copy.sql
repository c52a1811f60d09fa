-- The top-level header block of each message beside its metadata, so that FETCH of header
-- fields and ENVELOPE need not read (and decompress) the whole body. NULL for messages stored
-- before, and for header blocks too large to copy: those are read from the body.
ALTER TABLE message_meta ADD COLUMN header BLOB;

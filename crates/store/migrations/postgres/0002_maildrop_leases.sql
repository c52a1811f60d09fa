-- Exclusive access to a maildrop (POP3, RFC 1939 §4) across every Trimaran process on the
-- store: a lease that its holder renews and that lapses if the holder dies.
CREATE TABLE maildrop_leases (
    account_id  BIGINT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    holder      TEXT NOT NULL,
    expires     BIGINT NOT NULL
);

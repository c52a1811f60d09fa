-- DKIM signing keys (RFC 6376), per domain and selector. `private_key` is PKCS#8 DER;
-- `public_key` is what the DNS record's p= carries (RFC 6376 §3.6.1: the SubjectPublicKeyInfo
-- DER of an RSA key; RFC 8463 §4: the 32 raw bytes of an Ed25519 key). A key goes with its
-- domain.
CREATE TABLE dkim_keys (
    domain_id    BIGINT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    selector     TEXT NOT NULL,
    algorithm    TEXT NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key  BYTEA NOT NULL,
    public_key   BYTEA NOT NULL,
    created      BIGINT NOT NULL,
    PRIMARY KEY (domain_id, selector)
);

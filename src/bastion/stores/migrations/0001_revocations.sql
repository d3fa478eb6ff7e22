-- Revoked access tokens (bastion.stores.postgres_revocations): kept until the token's own expiry.
CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL,  -- the token's exp, epoch seconds
    revoked_at BIGINT NOT NULL   -- epoch seconds
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

-- The token vault (bastion.credentials.vault_postgres): records the vault sealed (AES-GCM with the
-- vault key, key_id naming it), never a token in clear; beside them only what finds and expires
-- them. Times are wall-clock epoch seconds.
CREATE TABLE vault_tokens (
    owner TEXT NOT NULL,               -- Principal.key: issuer and subject
    route TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sealed BYTEA NOT NULL,             -- nonce || ciphertext || tag
    connected_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,       -- the access token's, NULL: not said
    refreshable BOOLEAN NOT NULL,
    PRIMARY KEY (owner, route)
);
CREATE INDEX vault_tokens_key_id ON vault_tokens (key_id);
-- Unfinished connections, by the SHA-256 of their state: single use (DELETE ... RETURNING).
CREATE TABLE vault_pending (
    state_digest TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX vault_pending_expires_at ON vault_pending (expires_at);
-- Bastion's client registrations at upstream authorization servers (RFC 7591).
CREATE TABLE vault_clients (
    route TEXT NOT NULL,
    issuer TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (route, issuer)
);

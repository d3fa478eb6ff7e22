-- The authorization server's records (bastion.oauth.store_postgres_grants and _flows), the columns
-- of the embedded store's. Secrets (codes, refresh tokens, browser cookies, states at identity
-- providers) are never stored, only their SHA-256 (digest). Times are wall-clock epoch seconds;
-- JSON is text, as the records write it.

-- Durable: refresh-token families (OAuth 2.1 section 4.3.1, RFC 9700 section 4.14: rotated tokens,
-- a reused one revokes its family), the access tokens issued from them, consents, clients.
CREATE TABLE oauth_families (
    id TEXT PRIMARY KEY,
    grant_json TEXT NOT NULL,
    sub TEXT NOT NULL,
    client_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,  -- the family's absolute end
    revoked_at DOUBLE PRECISION            -- NULL: not revoked
);
CREATE INDEX oauth_families_sub ON oauth_families (sub, client_id);
CREATE INDEX oauth_families_expires_at ON oauth_families (expires_at);
CREATE TABLE oauth_refresh_tokens (
    digest TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION               -- the first use; NULL: never used
);
CREATE INDEX oauth_refresh_tokens_family ON oauth_refresh_tokens (family_id);
CREATE TABLE oauth_access_tokens (
    jti TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL             -- the token's exp
);
CREATE INDEX oauth_access_tokens_family ON oauth_access_tokens (family_id);
CREATE INDEX oauth_access_tokens_expires_at ON oauth_access_tokens (expires_at);
CREATE TABLE oauth_consents (
    sub TEXT NOT NULL,
    client_id TEXT NOT NULL,
    route TEXT NOT NULL,
    scopes TEXT NOT NULL,                  -- a JSON array
    granted_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sub, client_id, route)
);
CREATE TABLE oauth_clients (               -- dynamically registered (RFC 7591)
    client_id TEXT PRIMARY KEY,
    metadata TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

-- Short-lived: pending authorization requests, clients' states, codes (single use, RFC 6749
-- section 10.5), browser sign-ins, sign-ins waiting at an identity provider.
CREATE TABLE oauth_pending (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    user_json TEXT,                        -- who signed in; NULL: nobody yet
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE oauth_states (
    client_id TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (client_id, state)
);
CREATE TABLE oauth_codes (
    digest TEXT PRIMARY KEY,
    grant_json TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used BOOLEAN NOT NULL DEFAULT false,
    family_id TEXT                         -- the family its first redemption started
);
CREATE INDEX oauth_codes_expires_at ON oauth_codes (expires_at);
CREATE TABLE oauth_sign_ins (
    digest TEXT PRIMARY KEY,
    user_json TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE oauth_federated (
    digest TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

-- Approval requests (bastion.approvals.store_postgres): one row per request, every transition one
-- conditional UPDATE. Times are epoch seconds (float); ids compare bytewise (COLLATE "C"), as in SQLite.
CREATE TABLE approvals (
    id TEXT COLLATE "C" PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('review', 'confirm')),
    requester TEXT NOT NULL,
    route TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments_sha256 TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    requester_label TEXT NOT NULL,
    client_id TEXT NOT NULL,
    arguments TEXT NOT NULL,       -- JSON text, as the audit log stores them (redacted)
    risk TEXT NOT NULL,
    classification TEXT NOT NULL,
    policy_ids TEXT NOT NULL,      -- JSON array of strings
    decision_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'consumed')),
    decided_at DOUBLE PRECISION,
    approver TEXT,
    approver_key TEXT,
    reason TEXT NOT NULL,
    consumed_at DOUBLE PRECISION,
    consumed_by TEXT
);
CREATE INDEX approvals_binding ON approvals (requester, route, tool, arguments_sha256, policy_version, created_at);
CREATE INDEX approvals_status_expiry ON approvals (status, expires_at);
CREATE INDEX approvals_created ON approvals (created_at, id);

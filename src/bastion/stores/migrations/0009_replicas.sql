-- The replicas writing the shared audit log (bastion.audit.replicas): each one's row, its heartbeat
-- moved every few seconds. A replica whose heartbeat stopped is lost: one live replica writes an
-- outcome record "replica_lost" for every call that replica allowed and recorded no outcome for,
-- then deletes its row. A replica that stops gracefully deletes its own row.
CREATE TABLE gateway_replicas (
    replica TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Which replica wrote a record (outside the record: the chain does not cover it, and the embedded
-- log has no such column); NULL for the CLI's records and for records written before this version.
ALTER TABLE audit_events ADD COLUMN replica TEXT;
-- The allowed calls of one replica, which is what the lost replica's sweep reads.
CREATE INDEX audit_events_allowed_by_replica ON audit_events (replica, seq) WHERE kind = 'decision' AND effect = 'allow';

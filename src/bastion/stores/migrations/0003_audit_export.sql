-- Audit export (bastion.audit.export_postgres): each destination's cursor, the seq and hash of the
-- last record it accepted. An exporting replica holds its row locked (FOR UPDATE SKIP LOCKED) for
-- the turn, so one replica at a time exports to a destination, and moves it in the same transaction.
CREATE TABLE audit_export_cursors (
    name TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

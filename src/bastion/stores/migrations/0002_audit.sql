-- The audit log (bastion.audit.store_postgres): one hash chain for every replica. The columns
-- are those of the embedded log (bastion.audit.schema); record holds the canonical JSON, the truth.
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    time TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    route TEXT NOT NULL,
    subject TEXT,
    target TEXT,
    effect TEXT,
    record TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_decision_id ON audit_events (decision_id);
CREATE INDEX audit_events_subject ON audit_events (subject, seq);
CREATE INDEX audit_events_route ON audit_events (route, seq);
CREATE INDEX audit_events_target ON audit_events (target, seq);
-- The chain's head: the one row every writing transaction locks (FOR UPDATE) and moves on, so
-- replicas append one after another and the sequence has no gaps.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, repeat('0', 64));

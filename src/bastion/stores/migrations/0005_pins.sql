-- Definition pins (bastion.catalog.pins_postgres): per route, the approved definitions, the held ones,
-- the kinds whose baseline started, and a version every change bumps. Definitions are canonical JSON
-- text, findings a JSON array; times are epoch seconds (float); names compare bytewise (COLLATE "C").
CREATE TABLE definition_pins (
    route TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('tool', 'prompt', 'resource', 'resource_template')),
    name TEXT COLLATE "C" NOT NULL,
    sha256 TEXT NOT NULL,
    definition TEXT NOT NULL,
    approver TEXT NOT NULL,
    reviewed BOOLEAN NOT NULL,
    pinned_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (route, kind, name)
);
CREATE TABLE definition_held (
    route TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('tool', 'prompt', 'resource', 'resource_template')),
    name TEXT COLLATE "C" NOT NULL,
    sha256 TEXT NOT NULL,
    definition TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('new', 'drift', 'finding', 'unpinned')),
    action TEXT NOT NULL,
    findings TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (route, kind, name)
);
CREATE TABLE definition_baselines (
    route TEXT NOT NULL,
    kind TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (route, kind)
);
CREATE TABLE definition_versions (
    route TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

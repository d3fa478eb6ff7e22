-- Result volume baselines (bastion.stores.postgres_volume): each (route, tool)'s last samples as a JSON
-- array of [bytes, blocks, items], oldest first; loaded at start, written behind (the last replica to
-- save a key wins). saved_at: epoch seconds.
CREATE TABLE volume_baselines (
    route TEXT NOT NULL,
    tool TEXT NOT NULL,
    samples TEXT NOT NULL,
    saved_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (route, tool)
);

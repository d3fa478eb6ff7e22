"""The shared ``VolumeStore``: result volume baselines in the PostgreSQL database of ``stores.postgres``.

Table ``volume_baselines (route, tool, samples, saved_at)`` (migration ``0006_volume.sql``):
``samples`` is the JSON array of the baseline's ``[bytes, blocks, items]`` samples, oldest first
(200 samples: about 3 KB), ``saved_at`` the wall-clock epoch seconds of the save. As with the
embedded store, the gateway checks every result against its baselines in memory (no I/O on the
request path): ``load`` reads the table once, at start, and ``save`` upserts the changed keys
behind, on the periodic sweep and at stop, all in one transaction (all or none).

Shared between replicas the way the embedded file is shared between processes: a replica that
starts learns from what the others saved (a new replica does not start blind), and each replica
then keeps its own baselines from the results it sees; the last replica to save a key wins. A
baseline is a statistical window, so which replica's recent window is kept does not matter much;
none of them is ever merged or lost half-written.

Errors: ``load`` leaves out (and logs) a saved value that is not a list of three non-negative
integers per sample; otherwise the driver's (``stores.postgres_tables.POSTGRES_ERRORS``) when the
database cannot be reached, and ``RuntimeError`` before ``start``: the gateway does not start
without its baselines, and a failed save keeps them marked changed for the next sweep
(``volume.keeper.BaselineKeeper``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence

from bastion.stores.postgres_tables import PostgresTables
from bastion.stores.volume import BaselineKey, Sample, valid_samples

__all__ = ["PostgresVolumeStore"]

logger = logging.getLogger(__name__)

_UPSERT = (
    "INSERT INTO volume_baselines (route, tool, samples, saved_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (route, tool) DO UPDATE SET samples = excluded.samples, saved_at = excluded.saved_at"
)


class PostgresVolumeStore(PostgresTables):
    """``VolumeStore`` in table ``volume_baselines`` of ``database`` (see the module docstring)."""

    LABEL = "volume store"

    async def load(self) -> dict[BaselineKey, tuple[Sample, ...]]:
        """See ``VolumeStore.load``: one read."""
        loaded: dict[BaselineKey, tuple[Sample, ...]] = {}
        for row in await self._pool.fetch("SELECT route, tool, samples FROM volume_baselines"):
            route, tool = row["route"], row["tool"]
            try:
                samples = valid_samples(json.loads(row["samples"]))
            except (ValueError, RecursionError):
                samples = None
            if samples is None:
                logger.warning("the saved volume baseline of %s/%s is not readable; learning it again", route, tool)
                continue
            loaded[(route, tool)] = samples
        return loaded

    async def save(self, baselines: Mapping[BaselineKey, Sequence[Sample]]) -> None:
        """See ``VolumeStore.save``: one transaction, in key order (two replicas saving the same
        keys at once wait for each other instead of deadlocking)."""
        saved_at = time.time()
        rows = [
            (route, tool, json.dumps([list(sample) for sample in samples], separators=(",", ":")), saved_at)
            for (route, tool), samples in sorted(baselines.items())
        ]
        if not rows:
            return
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.executemany(_UPSERT, rows)

"""The durable volume store: each (route, tool)'s baseline as one row of the data directory's SQLite file.

Table ``volume_baselines (route, tool, samples)``: ``samples`` is the JSON array of the
baseline's ``[bytes, blocks, items]`` samples, oldest first (200 samples: about 3 KB). ``save``
upserts every changed key in one ``BEGIN IMMEDIATE`` transaction (``SQLiteTables._run``) on a
worker thread; ``load`` reads them all once, at start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.stores.sqlite import SQLiteTables
from bastion.stores.volume import BaselineKey, Sample, valid_samples

__all__ = ["SQLiteVolumeStore"]

logger = logging.getLogger(__name__)

_DDL = """
CREATE TABLE IF NOT EXISTS volume_baselines (
    route TEXT NOT NULL,
    tool TEXT NOT NULL,
    samples TEXT NOT NULL,
    PRIMARY KEY (route, tool)
);
"""
_UPSERT = (
    "INSERT INTO volume_baselines (route, tool, samples) VALUES (?, ?, ?) "
    "ON CONFLICT (route, tool) DO UPDATE SET samples = excluded.samples"
)


def _rows(conn: Any) -> list[tuple[str, str, str]]:
    """Every row of the table (``conn``: the transaction's ``sqlite3.Connection``)."""
    return list(conn.execute("SELECT route, tool, samples FROM volume_baselines").fetchall())


class SQLiteVolumeStore(SQLiteTables):
    """``VolumeStore`` on SQLite at ``path`` (the data directory's ``bastion.db``); ``start`` before
    use. Errors of the file (``bastion.stores.sqlite.STORE_ERRORS``) propagate."""

    DDL = _DDL
    LABEL = "volume store"

    async def load(self) -> dict[BaselineKey, tuple[Sample, ...]]:
        """See ``VolumeStore.load``: one read transaction."""
        loaded: dict[BaselineKey, tuple[Sample, ...]] = {}
        for route, tool, text in await self._run(_rows, write=False):
            try:
                samples = valid_samples(json.loads(text))
            except (ValueError, RecursionError):
                samples = None
            if samples is None:
                logger.warning("the saved volume baseline of %s/%s is not readable; learning it again", route, tool)
                continue
            loaded[(route, tool)] = samples
        return loaded

    async def save(self, baselines: Mapping[BaselineKey, Sequence[Sample]]) -> None:
        """See ``VolumeStore.save``: one write transaction."""
        rows = [
            (route, tool, json.dumps([list(sample) for sample in samples], separators=(",", ":")))
            for (route, tool), samples in baselines.items()
        ]
        if rows:
            await self._run(lambda conn: conn.executemany(_UPSERT, rows))

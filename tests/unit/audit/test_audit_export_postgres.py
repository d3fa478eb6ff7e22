"""Audit export from the shared PostgreSQL log (``bastion.audit.export_postgres``), against the PostgreSQL
on loopback: replicas exporting to one destination send each record once between them, one at a time,
and a replica that fails mid-batch leaves the cursor where it was for another to carry on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from tests.support.audit_events import decision
from tests.support.databases import POSTGRES_URL, drop_postgres_schema, postgres_schema

from bastion.audit.export import Exporter, ExportRecord, MemorySink, SinkUnavailable
from bastion.audit.export_postgres import PostgresSource
from bastion.audit.store_postgres import PostgresAuditLog
from bastion.stores.postgres import PostgresDatabase


@pytest.fixture
async def databases(tmp_path: Path) -> AsyncIterator[list[PostgresDatabase]]:
    """Three replicas' handles on one fresh schema (each its own pool, as separate processes)."""
    handles = [PostgresDatabase(POSTGRES_URL, schema=postgres_schema(tmp_path)) for _ in range(3)]
    for handle in handles:
        await handle.start()
    yield handles
    for handle in handles:
        await handle.close()
    await drop_postgres_schema(tmp_path)


async def _until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _cursor(database: PostgresDatabase, name: str) -> int:
    return int(await database.pool.fetchval("SELECT seq FROM audit_export_cursors WHERE name = $1", name))


async def test_replicas_export_each_record_once_between_them(databases: list[PostgresDatabase]) -> None:
    sinks = [MemorySink(), MemorySink()]
    exporters = [Exporter("siem", PostgresSource(db, "siem"), sink, batch=7, poll_s=0.005)
                 for db, sink in zip(databases[:2], sinks, strict=True)]  # fmt: skip
    tasks = [asyncio.create_task(e.run()) for e in exporters]
    try:
        async with PostgresAuditLog(databases[2]) as log:
            for n in range(60):  # committed while both replicas poll
                await log.append(decision(n))
                if n % 10 == 0:
                    await asyncio.sleep(0.02)
        await _until(lambda: sum(len(s.records) for s in sinks) >= 60)
        await asyncio.sleep(0.1)  # time for a second copy, if there were to be one
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    seqs = sorted(r.seq for s in sinks for r in s.records)
    assert seqs == list(range(1, 61))  # every record, none twice
    assert await _cursor(databases[0], "siem") == 60


class _Stalled(MemorySink):
    """A sink whose delivery waits for ``release``, then fails: a replica dying mid-batch."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, records: Sequence[ExportRecord]) -> None:
        self.sending.set()
        await self.release.wait()
        raise SinkUnavailable("gone mid-batch")


async def test_a_replica_failing_mid_batch_leaves_the_cursor_for_another(databases: list[PostgresDatabase]) -> None:
    async with PostgresAuditLog(databases[2]) as log:
        for n in range(5):
            await log.append(decision(n))
    stalled, healthy = _Stalled(), MemorySink()
    first = Exporter("siem", PostgresSource(databases[0], "siem"), stalled)
    second = Exporter("siem", PostgresSource(databases[1], "siem"), healthy)
    attempt = asyncio.create_task(first.export_pending())
    await stalled.sending.wait()  # the first replica holds the destination's row
    assert await second.export_pending() == 0  # so the second skips its turn
    assert healthy.records == []
    stalled.release.set()
    with pytest.raises(SinkUnavailable):
        await attempt
    assert await _cursor(databases[0], "siem") == 0  # rolled back with the batch
    assert await second.export_pending() == 5
    assert [r.seq for r in healthy.records] == [1, 2, 3, 4, 5]
    assert await _cursor(databases[1], "siem") == 5
    other = Exporter("archive", PostgresSource(databases[1], "archive"), MemorySink())
    assert await other.export_pending() == 5  # each destination has a cursor of its own

"""The shared export source: the PostgreSQL log, each destination's cursor a row that one replica at a
time holds.

Every replica runs an exporter per destination, but only one exports at a time: a turn
(``PostgresSource.claim``) is one transaction that locks the destination's row of
``audit_export_cursors`` (migration ``0003_audit_export.sql``) with ``FOR UPDATE SKIP LOCKED``. The
replica that gets the row reads the records after its ``seq``, sends them, moves the row and
commits; the others find the row locked, skip the turn and poll again, so whichever replica is
alive carries on when another dies (its transaction rolls back with its connection: the cursor
stays, the batch is sent again, at least once). The cursor lives in the database, so a replica
that takes over continues where the last one stopped, whatever machine it is on.

The row is held for the time of one batch's delivery (bounded by the sink's timeouts: a syslog
write 30 s, an OTLP request ``timeout_s``), on a pooled connection idle in that transaction.
Records are visible in ``seq`` order, as on the embedded log: a writing transaction locks the
chain's head until it commits, so no record can commit behind one already seen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bastion.audit.chain import GENESIS_HASH
from bastion.audit.export import Claim, ExportRecord
from bastion.stores.postgres import PostgresDatabase

__all__ = ["PostgresSource"]

_ENSURE = "INSERT INTO audit_export_cursors (name, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (name) DO NOTHING"
_CLAIM = "SELECT seq, hash FROM audit_export_cursors WHERE name = $1 FOR UPDATE SKIP LOCKED"
_AFTER = "SELECT seq, hash, record FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
_ADVANCE = "UPDATE audit_export_cursors SET seq = $2, hash = $3 WHERE name = $1"


class _PostgresClaim:
    def __init__(self, connection: asyncpg.Connection | PoolConnectionProxy, name: str, seq: int) -> None:
        self._connection = connection
        self._name = name
        self.seq = seq

    async def after(self, limit: int) -> list[ExportRecord]:
        rows = await self._connection.fetch(_AFTER, self.seq, limit)
        return [ExportRecord(int(row[0]), str(row[1]), str(row[2])) for row in rows]

    async def advance(self, last: ExportRecord) -> None:
        await self._connection.execute(_ADVANCE, self._name, last.seq, last.hash)
        self.seq = last.seq  # durable once the turn's transaction commits


class PostgresSource:
    """``ExportSource`` on the shared log in ``database`` for destination ``name`` (module docstring).
    Uses the database's pool, which the gateway's PostgreSQL stores keep open."""

    def __init__(self, database: PostgresDatabase, name: str) -> None:
        self._database = database
        self.name = name
        self._ensured = False

    @asynccontextmanager
    async def claim(self) -> AsyncIterator[Claim | None]:
        """See ``ExportSource.claim``: None while another replica holds the destination's row. The
        cursor moves when the turn ends without an error (its transaction commits)."""
        async with self._database.pool.acquire() as connection:
            if not self._ensured:
                await connection.execute(_ENSURE, self.name, GENESIS_HASH)
                self._ensured = True
            async with connection.transaction():
                row = await connection.fetchrow(_CLAIM, self.name)
                yield None if row is None else _PostgresClaim(connection, self.name, int(row[0]))

    async def aclose(self) -> None:
        """Nothing to release: connections go back to the pool after each turn."""

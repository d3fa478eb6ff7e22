"""The embedded ``VaultStore``: sealed records in three tables of the data directory's SQLite file.

The connection and transactions are ``bastion.stores.sqlite.SQLiteTables``'; ``reseal`` is
one transaction, rolled back when the re-sealing raises. ``refreshing`` is a lock of this process
per file, owner and route: the embedded store serves one process (replicas use PostgreSQL).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from weakref import WeakValueDictionary

from bastion.credentials.vault_store import Connection, RecordKind, Sealed
from bastion.stores.sqlite import SQLiteTables

__all__ = ["SQLiteVaultStore"]

_DDL = """
CREATE TABLE IF NOT EXISTS vault_tokens (
    owner TEXT NOT NULL, route TEXT NOT NULL, key_id TEXT NOT NULL, sealed BLOB NOT NULL,
    connected_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL, refreshable INTEGER NOT NULL,
    PRIMARY KEY (owner, route));
CREATE TABLE IF NOT EXISTS vault_pending (
    state_digest TEXT PRIMARY KEY, key_id TEXT NOT NULL, sealed BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS vault_clients (
    route TEXT NOT NULL, issuer TEXT NOT NULL, key_id TEXT NOT NULL, sealed BLOB NOT NULL,
    registered_at REAL NOT NULL, PRIMARY KEY (route, issuer));
"""

#: Each kind of record: its table and the columns that identify a record.
_TABLES: tuple[tuple[RecordKind, str, tuple[str, ...]], ...] = (
    ("tokens", "vault_tokens", ("owner", "route")),
    ("pending", "vault_pending", ("state_digest",)),
    ("client", "vault_clients", ("route", "issuer")),
)


#: The refresh locks of this process, by (file, owner, route); dropped once nobody holds or waits.
_REFRESHING: WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = WeakValueDictionary()


class SQLiteVaultStore(SQLiteTables):
    """``VaultStore`` on SQLite at ``path`` (the data directory's ``bastion.db``)."""

    DDL = _DDL
    LABEL = "token vault"

    async def put_tokens(
        self, owner: str, route: str, sealed: Sealed, *, expires_at: float | None, refreshable: bool, now: float
    ) -> None:
        """See ``VaultStore.put_tokens``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO vault_tokens (owner, route, key_id, sealed, connected_at, updated_at, expires_at, "
                "refreshable) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner, route) DO UPDATE SET "
                "key_id = excluded.key_id, sealed = excluded.sealed, updated_at = excluded.updated_at, "
                "expires_at = excluded.expires_at, refreshable = excluded.refreshable",
                (owner, route, sealed.key_id, sealed.blob, now, now, expires_at, int(refreshable)),
            )
        )

    async def get_tokens(self, owner: str, route: str) -> Sealed | None:
        """See ``VaultStore.get_tokens``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT key_id, sealed FROM vault_tokens WHERE owner = ? AND route = ?", (owner, route)
            ).fetchone(),
            write=False,
        )
        return None if row is None else Sealed(row[0], row[1])

    async def delete_tokens(self, owner: str, route: str) -> bool:
        """See ``VaultStore.delete_tokens``."""
        count = await self._run(
            lambda c: c.execute("DELETE FROM vault_tokens WHERE owner = ? AND route = ?", (owner, route)).rowcount
        )
        return bool(count)

    async def connections(self, owner: str) -> list[Connection]:
        """See ``VaultStore.connections``."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT route, connected_at, expires_at, refreshable FROM vault_tokens WHERE owner = ? ORDER BY route",
                (owner,),
            ).fetchall(),
            write=False,
        )
        return [Connection(row[0], row[1], row[2], bool(row[3])) for row in rows]

    async def put_pending(self, state_digest: str, sealed: Sealed, expires_at: float) -> None:
        """See ``VaultStore.put_pending``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO vault_pending (state_digest, key_id, sealed, expires_at) VALUES (?, ?, ?, ?)",
                (state_digest, sealed.key_id, sealed.blob, expires_at),
            )
        )

    async def take_pending(self, state_digest: str, now: float) -> Sealed | None:
        """See ``VaultStore.take_pending``."""
        row = await self._run(
            lambda c: c.execute(
                "DELETE FROM vault_pending WHERE state_digest = ? RETURNING key_id, sealed, expires_at",
                (state_digest,),
            ).fetchone()
        )
        return None if row is None or row[2] <= now else Sealed(row[0], row[1])

    async def put_client(self, route: str, issuer: str, sealed: Sealed, *, now: float) -> None:
        """See ``VaultStore.put_client``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO vault_clients (route, issuer, key_id, sealed, registered_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (route, issuer) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed, "
                "registered_at = excluded.registered_at",
                (route, issuer, sealed.key_id, sealed.blob, now),
            )
        )

    async def get_client(self, route: str, issuer: str) -> Sealed | None:
        """See ``VaultStore.get_client``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT key_id, sealed FROM vault_clients WHERE route = ? AND issuer = ?", (route, issuer)
            ).fetchone(),
            write=False,
        )
        return None if row is None else Sealed(row[0], row[1])

    async def purge(self, now: float) -> int:
        """See ``VaultStore.purge``."""
        return int(
            await self._run(lambda c: c.execute("DELETE FROM vault_pending WHERE expires_at <= ?", (now,)).rowcount)
        )

    @asynccontextmanager
    async def refreshing(self, owner: str, route: str) -> AsyncIterator[None]:
        """See ``VaultStore.refreshing``: a lock of this process."""
        key = (str(self._path), owner, route)
        lock = _REFRESHING.get(key)
        if lock is None:
            lock = _REFRESHING[key] = asyncio.Lock()
        async with lock:
            yield

    async def reseal(self, current_key_id: str, reseal: Callable[[RecordKind, tuple[str, ...], Sealed], Sealed]) -> int:
        """See ``VaultStore.reseal``: one transaction."""

        def work(c: sqlite3.Connection) -> int:
            count = 0
            for kind, table, columns in _TABLES:
                names = ", ".join(columns)
                where = " AND ".join(f"{col} = ?" for col in columns)
                rows = c.execute(f"SELECT {names}, key_id, sealed FROM {table} WHERE key_id != ?",  # noqa: S608
                                 (current_key_id,)).fetchall()  # fmt: skip
                for row in rows:
                    ids = tuple(str(v) for v in row[: len(columns)])
                    fresh = reseal(kind, ids, Sealed(row[-2], row[-1]))
                    c.execute(f"UPDATE {table} SET key_id = ?, sealed = ? WHERE {where}",  # noqa: S608
                              (fresh.key_id, fresh.blob, *ids))  # fmt: skip
                    count += 1
            return count

        return await self._run(work)

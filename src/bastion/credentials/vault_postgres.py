"""The shared ``VaultStore``: sealed records in three tables of the PostgreSQL database, for every replica.

A token a person connected through one replica is read by every other, since they all read and
write the same rows (``vault_tokens`` by ``(owner, route)``, ``vault_pending`` by ``state_digest``,
``vault_clients`` by ``(route, issuer)``; migration ``0007_vault.sql``). The rows hold what
``TokenVault`` sealed with the vault key (``key_id`` and the AES-GCM blob, as ``BYTEA``), so the
database never sees a token in clear; every replica needs the same vault keys to open them.
Times are wall-clock epoch seconds (``DOUBLE PRECISION``).

How the races are settled, each in the database:

- ``take_pending`` is one ``DELETE ... RETURNING``: of two replicas finishing the same connection
  (the upstream's redirect replayed, or delivered twice), the row goes to exactly one; the other
  gets None.
- ``put_tokens`` and ``put_client`` are one ``INSERT ... ON CONFLICT DO UPDATE`` each: the last
  writer wins whole, and a replacement keeps the first ``connected_at``.
- ``reseal`` is one transaction that locks the rows it re-seals (``SELECT ... FOR UPDATE``) and
  rolls back when the re-sealing raises: all records or none.
- ``refreshing`` holds a session advisory lock (``pg_advisory_lock(<vault>, hashtext(owner,
  route))``) while one replica refreshes a person's upstream tokens; another replica refreshing the
  same tokens waits for it, then reads the tokens it stored instead of presenting the refresh token
  a second time (which an upstream that rotates refresh tokens would take for a reuse). The lock
  lives on a connection of its own, opened for the refresh and closed after it (which releases
  the lock, also when the replica dies), so an upstream that answers slowly never holds one of the
  pool's connections that the other stores (the audit log) need.

Errors are the driver's (``bastion.stores.postgres_tables``): the vault's callers refuse the call
(the pipeline's deny, the portal's error page), never answer without the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg

from bastion.credentials.vault_store import Connection, RecordKind, Sealed
from bastion.stores.postgres_tables import PostgresTables

__all__ = ["PostgresVaultStore"]

_REFRESH_LOCKS = 0x7661756C  # "vaul": the first key of the vault's advisory locks (a namespace of its own)
_LOCK = "SELECT pg_advisory_lock($1, hashtext($2))"

#: Each kind of record: its table and the columns that identify a record.
_TABLES: tuple[tuple[RecordKind, str, tuple[str, ...]], ...] = (
    ("tokens", "vault_tokens", ("owner", "route")),
    ("pending", "vault_pending", ("state_digest",)),
    ("client", "vault_clients", ("route", "issuer")),
)


class PostgresVaultStore(PostgresTables):
    """``VaultStore`` in ``database`` (a ``PostgresDatabase``; see the module docstring)."""

    LABEL = "token vault"

    async def put_tokens(
        self, owner: str, route: str, sealed: Sealed, *, expires_at: float | None, refreshable: bool, now: float
    ) -> None:
        """See ``VaultStore.put_tokens``."""
        await self._pool.execute(
            "INSERT INTO vault_tokens (owner, route, key_id, sealed, connected_at, updated_at, expires_at, "
            "refreshable) VALUES ($1, $2, $3, $4, $5, $5, $6, $7) ON CONFLICT (owner, route) DO UPDATE SET "
            "key_id = excluded.key_id, sealed = excluded.sealed, updated_at = excluded.updated_at, "
            "expires_at = excluded.expires_at, refreshable = excluded.refreshable",
            owner, route, sealed.key_id, sealed.blob, now, expires_at, refreshable,
        )  # fmt: skip

    async def get_tokens(self, owner: str, route: str) -> Sealed | None:
        """See ``VaultStore.get_tokens``."""
        row = await self._pool.fetchrow(
            "SELECT key_id, sealed FROM vault_tokens WHERE owner = $1 AND route = $2", owner, route
        )
        return None if row is None else Sealed(row["key_id"], bytes(row["sealed"]))

    async def delete_tokens(self, owner: str, route: str) -> bool:
        """See ``VaultStore.delete_tokens``."""
        deleted = await self._pool.fetchval(
            "DELETE FROM vault_tokens WHERE owner = $1 AND route = $2 RETURNING true", owner, route
        )
        return deleted is not None

    async def connections(self, owner: str) -> list[Connection]:
        """See ``VaultStore.connections``."""
        rows = await self._pool.fetch(
            "SELECT route, connected_at, expires_at, refreshable FROM vault_tokens WHERE owner = $1 ORDER BY route",
            owner,
        )
        return [Connection(row["route"], row["connected_at"], row["expires_at"], row["refreshable"]) for row in rows]

    async def put_pending(self, state_digest: str, sealed: Sealed, expires_at: float) -> None:
        """See ``VaultStore.put_pending``."""
        await self._pool.execute(
            "INSERT INTO vault_pending (state_digest, key_id, sealed, expires_at) VALUES ($1, $2, $3, $4)",
            state_digest, sealed.key_id, sealed.blob, expires_at,
        )  # fmt: skip

    async def take_pending(self, state_digest: str, now: float) -> Sealed | None:
        """See ``VaultStore.take_pending``: one ``DELETE ... RETURNING``, so one replica gets it."""
        row = await self._pool.fetchrow(
            "DELETE FROM vault_pending WHERE state_digest = $1 RETURNING key_id, sealed, expires_at", state_digest
        )
        return None if row is None or row["expires_at"] <= now else Sealed(row["key_id"], bytes(row["sealed"]))

    async def put_client(self, route: str, issuer: str, sealed: Sealed, *, now: float) -> None:
        """See ``VaultStore.put_client``."""
        await self._pool.execute(
            "INSERT INTO vault_clients (route, issuer, key_id, sealed, registered_at) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (route, issuer) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed, "
            "registered_at = excluded.registered_at",
            route, issuer, sealed.key_id, sealed.blob, now,
        )  # fmt: skip

    async def get_client(self, route: str, issuer: str) -> Sealed | None:
        """See ``VaultStore.get_client``."""
        row = await self._pool.fetchrow(
            "SELECT key_id, sealed FROM vault_clients WHERE route = $1 AND issuer = $2", route, issuer
        )
        return None if row is None else Sealed(row["key_id"], bytes(row["sealed"]))

    async def purge(self, now: float) -> int:
        """See ``VaultStore.purge``."""
        deleted = await self._pool.fetchval(
            "WITH gone AS (DELETE FROM vault_pending WHERE expires_at <= $1 RETURNING 1) SELECT count(*) FROM gone",
            now,
        )
        return int(deleted)

    @asynccontextmanager
    async def refreshing(self, owner: str, route: str) -> AsyncIterator[None]:
        """See ``VaultStore.refreshing``: an advisory lock on a connection of its own, released by
        closing that connection when left."""
        _ = self._pool  # RuntimeError before start, as every call
        connection = await self._database.connect()
        try:
            await connection.execute(_LOCK, _REFRESH_LOCKS, f"{owner}\x1f{route}")
            yield
        finally:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):  # then gone anyway
                await connection.close(timeout=2.0)

    async def reseal(self, current_key_id: str, reseal: Callable[[RecordKind, tuple[str, ...], Sealed], Sealed]) -> int:
        """See ``VaultStore.reseal``: one transaction, its rows locked, rolled back when ``reseal`` raises."""
        count = 0
        async with self._pool.acquire() as connection, connection.transaction():
            for kind, table, columns in _TABLES:
                names = ", ".join(columns)
                where = " AND ".join(f"{column} = ${n}" for n, column in enumerate(columns, start=3))
                rows = await connection.fetch(
                    f"SELECT {names}, key_id, sealed FROM {table} WHERE key_id <> $1 FOR UPDATE",  # noqa: S608
                    current_key_id,
                )
                for row in rows:
                    ids = tuple(str(row[column]) for column in columns)
                    fresh = reseal(kind, ids, Sealed(row["key_id"], bytes(row["sealed"])))
                    await connection.execute(
                        f"UPDATE {table} SET key_id = $1, sealed = $2 WHERE {where}",  # noqa: S608 - constants only
                        fresh.key_id, fresh.blob, *ids,
                    )  # fmt: skip
                    count += 1
        return count

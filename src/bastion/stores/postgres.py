"""The shared PostgreSQL database the replicas' durable stores live in: one connection pool per
process, and the schema brought up to date at start.

``PostgresDatabase(url, schema=...)`` is what every PostgreSQL store of a process is built on
(``stores.postgres_revocations.PostgresRevocationStore``, ...). The stores ``start`` and
``close`` it; it opens its pool on the first ``start`` and closes it after the last ``close``,
so one pool serves them all.

Schema migrations are the versioned SQL files of ``bastion/stores/migrations/`` (``0001_<what>.sql``,
``0002_...``), applied in order at start by the first replica that gets there: under a
PostgreSQL advisory lock (``pg_advisory_lock``, held while migrating, so replicas starting
together wait for each other instead of racing), each file not yet in the
table ``bastion_migrations`` runs in its own transaction together with its row there. A
migration is never edited once released; a change is a new file. Every table lives in the
configured ``schema`` (created if missing; the pool's ``search_path``), so one database can
hold several deployments, and each test its own.

Errors: ``start`` raises ``asyncpg.PostgresError`` or ``OSError`` when the database cannot be
reached or a migration fails (nothing of that migration is applied), ``ValueError`` for a
schema name that is not a plain identifier.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Self

import asyncpg

__all__ = ["MIGRATIONS", "PostgresDatabase", "migrations"]

MIGRATIONS = "bastion.stores.migrations"
"""The package whose ``NNNN_<what>.sql`` files are the schema's versions."""

_MIGRATION_LOCK = 0x62617374696F6E  # "bastion": the advisory lock key every replica takes to migrate
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


def migrations() -> list[tuple[int, str, str]]:
    """The migrations as ``(version, name, sql)``, in version order. Raises ``ValueError`` when
    two files share a version or a version is skipped (a release would then not be replayable)."""
    found: list[tuple[int, str, str]] = []
    for entry in resources.files(MIGRATIONS).iterdir():
        match = _FILE.fullmatch(entry.name)
        if match is not None:
            found.append((int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"the migrations must be numbered 1, 2, ... without gaps: {versions}")
    return found


class PostgresDatabase:
    """A connection pool to the PostgreSQL database at ``url`` (a libpq URL,
    ``postgresql://user@host:5432/db``), its tables in ``schema``.

    ``min_size``/``max_size`` bound the pool's connections; ``connect_timeout_s`` bounds opening
    one. ``start``/``close`` are counted: the pool opens on the first ``start`` (migrating the
    schema) and closes on the matching last ``close``.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "bastion",
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not _IDENTIFIER.fullmatch(schema):
            raise ValueError(f"schema must be a lower-case SQL identifier, not {schema!r}")
        self.url = url
        self.schema = schema
        self._min_size, self._max_size = min_size, max_size
        self._timeout = connect_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._users = 0

    @property
    def pool(self) -> asyncpg.Pool:
        """The open pool; ``RuntimeError`` before ``start``."""
        if self._pool is None:
            raise RuntimeError("the PostgreSQL database is not started")
        return self._pool

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own outside the pool (for ``LISTEN``), with the schema's
        ``search_path``; the caller closes it."""
        return await asyncpg.connect(self.url, timeout=self._timeout, server_settings={"search_path": self.schema})

    async def start(self) -> None:
        """Open the pool and migrate the schema (first call only; later ones count a user)."""
        if self._pool is None:
            await self._migrate()
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._timeout,
                server_settings={"search_path": self.schema},
            )
        self._users += 1

    async def close(self) -> None:
        """Close the pool once its last user closed (idempotent past that)."""
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0 and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _migrate(self) -> None:
        connection = await asyncpg.connect(self.url, timeout=self._timeout)
        try:
            await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                await connection.execute(f'SET search_path TO "{self.schema}"')
                await connection.execute(
                    "CREATE TABLE IF NOT EXISTS bastion_migrations ("
                    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                applied = {row["version"] for row in await connection.fetch("SELECT version FROM bastion_migrations")}
                for version, name, sql in migrations():
                    if version in applied:
                        continue
                    async with connection.transaction():
                        await connection.execute(sql)
                        await connection.execute(
                            "INSERT INTO bastion_migrations (version, name) VALUES ($1, $2)", version, name
                        )
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        finally:
            await connection.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

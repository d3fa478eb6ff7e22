"""Tables in the shared PostgreSQL database: the base of the stores whose every call is a query.

``PostgresTables`` is to the PostgreSQL backends of approvals, pins, volume baselines, the token
vault and the authorization server what
``stores.sqlite.SQLiteTables`` is to their embedded ones: it holds the process's
``stores.postgres.PostgresDatabase`` (one pool, shared by every store of the process, the schema
migrated at its first ``start``), counts this store's ``start``/``close`` on it, and lends
connections. The tables themselves come from the migrations (``stores/migrations/``), never from
the store.

Errors: what asyncpg raises when the database cannot be reached or refuses a statement
(``POSTGRES_ERRORS``); ``RuntimeError`` for a call before ``start`` or after ``close``. Callers
fail closed on either (a pipeline stage that raises denies the call).
"""

from __future__ import annotations

from typing import ClassVar, Self

import asyncpg

from bastion.stores.postgres import PostgresDatabase

__all__ = ["POSTGRES_ERRORS", "PostgresTables"]

POSTGRES_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. a pooled connection the server terminated while it was idle
    OSError,
)
"""What a PostgreSQL store raises when the database cannot be reached or refuses a statement
(``TimeoutError`` is an ``OSError``), for callers that report it (the CLI)."""


class PostgresTables:
    """A store's tables in ``database``; ``start``/``close`` (idempotent) or ``async with``."""

    #: How the store names itself in "not open" errors.
    LABEL: ClassVar[str] = "store"

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._started = False

    @property
    def database(self) -> PostgresDatabase:
        """The database the store's tables are in."""
        return self._database

    async def start(self) -> None:
        """Open the database (its first user migrates the schema). Raises ``POSTGRES_ERRORS``."""
        if not self._started:
            await self._database.start()
            self._started = True

    async def close(self) -> None:
        """Release the database (idempotent; its pool closes after its last user)."""
        if self._started:
            self._started = False
            await self._database.close()

    @property
    def _pool(self) -> asyncpg.Pool:
        """The open pool; ``RuntimeError`` when the store is not open."""
        if not self._started:
            raise RuntimeError(f"the {self.LABEL} is not open")
        return self._database.pool

    async def __aenter__(self) -> Self:
        """``start`` and return the store."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """``close``."""
        await self.close()

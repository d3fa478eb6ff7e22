"""Tables in the embedded SQLite file: one connection, one transaction per call, off the event loop.

``SQLiteTables`` is the base of the embedded stores (authorization server, token
vault): one connection serves every call from a worker thread, under a lock, each
call one transaction (``BEGIN IMMEDIATE`` for writes, so single-use updates cannot
interleave with another process's). The audit log shares the file with its own
connection; ``busy_timeout`` makes them wait for each other. WAL, ``synchronous=FULL``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

__all__ = ["STORE_ERRORS", "SQLiteTables", "delete_rows"]

STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, OSError)
"""What an embedded store raises when its file cannot be read or written (for callers that report it)."""

T = TypeVar("T")


class SQLiteTables:
    """A store's tables in the SQLite file at ``path``; subclasses set ``DDL`` (``CREATE ... IF NOT EXISTS``)."""

    DDL: ClassVar[str] = ""
    #: How the store names itself in "not open" errors.
    LABEL: ClassVar[str] = "store"

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        """Open the database and create the tables. Raises ``sqlite3.Error``/``OSError``."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(self.DDL)
        self._conn = conn

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def __aenter__(self) -> Self:
        """``start`` and return the store."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """``close``."""
        await self.close()

    async def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """Run ``work(connection)`` in one transaction on a worker thread; roll back if it raises."""

        def call() -> T:
            with self._lock:
                conn = self._conn
                if conn is None:
                    raise sqlite3.ProgrammingError(f"the {self.LABEL} is not open")
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = work(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result

        return await asyncio.to_thread(call)


def delete_rows(conn: sqlite3.Connection, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> int:
    """Run each ``(DELETE statement, parameters)`` on ``conn`` (one transaction's); returns the rows deleted."""
    return sum(conn.execute(sql, params).rowcount for sql, params in statements)

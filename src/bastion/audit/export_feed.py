"""The embedded export source: the SQLite log read by ``seq``, each destination's cursor a file.

``LocalSource(feed, cursor)`` is the ``ExportSource`` of a gateway on the embedded log: every claim
is granted (one process writes the log and exports it), records come from the ``feed``
(``ReaderFeed`` over ``SQLiteAuditReader.after``: one range query on the primary key, ``WHERE seq
> ? ORDER BY seq LIMIT ?``, on a read-only connection, in a worker thread, so the gateway's writer
is never waited on), and the cursor is ``ExportCursor``: ``<data_dir>/audit-export-<name>.cursor``,
JSON ``{"seq", "hash"}``, replaced atomically and fsynced (``bastion.files.replace_private``).

Only committed records are visible, and the log commits in ``seq`` order (one writer), so a record
the feed has not seen yet never has a smaller ``seq`` than one it has: the cursor cannot skip over
a record committed late.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

from bastion.audit.chain import GENESIS_HASH
from bastion.audit.export import AuditFeed, Claim, ExportRecord
from bastion.files import replace_private

__all__ = ["ExportCursor", "LocalSource", "ReaderFeed", "RowsAfter"]


class RowsAfter(Protocol):
    """A reader of committed records by ``seq`` (``SQLiteAuditReader``)."""

    def after(self, seq: int, limit: int) -> list[tuple[int, str, str]]:
        """``(seq, hash, record text)`` of at most ``limit`` records after ``seq``, ascending."""
        ...


class ReaderFeed:
    """``AuditFeed`` over ``reader``, each read in a worker thread. A log whose file is not there yet
    reads as no records (the gateway creates it as it starts)."""

    def __init__(self, reader: RowsAfter) -> None:
        self.reader = reader

    async def after(self, seq: int, limit: int) -> list[ExportRecord]:
        """See ``AuditFeed.after``."""
        try:
            rows = await asyncio.to_thread(self.reader.after, seq, limit)
        except FileNotFoundError:
            return []
        return [ExportRecord(*row) for row in rows]

    async def aclose(self) -> None:
        """Nothing to release: the reader opens a connection per read."""


class ExportCursor:
    """The ``seq`` and ``hash`` of the last record a destination accepted, kept in ``path``."""

    def __init__(self, path: Path, seq: int = 0, hash: str = GENESIS_HASH) -> None:
        self.path = path
        self.seq = seq
        self.hash = hash

    @classmethod
    def load(cls, data_dir: Path, name: str) -> ExportCursor:
        """The cursor of destination ``name`` in ``data_dir`` (``seq`` 0 when it has none yet).
        Raises ``ValueError`` when the file is there but unreadable (never silently restart)."""
        path = data_dir / f"audit-export-{name}.cursor"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        try:
            document = json.loads(text)
            seq, head = document["seq"], document["hash"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not an export cursor: {exc}") from None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(head, str):
            raise ValueError(f"{path}: not an export cursor: seq {seq!r}, hash {head!r}")
        return cls(path, seq, head)

    def save(self, last: ExportRecord) -> None:
        """Move the cursor to ``last``, durably (atomic replace, fsynced)."""
        replace_private(self.path, json.dumps({"seq": last.seq, "hash": last.hash}).encode())
        self.seq, self.hash = last.seq, last.hash


class _LocalClaim:
    def __init__(self, feed: AuditFeed, cursor: ExportCursor) -> None:
        self._feed = feed
        self._cursor = cursor
        self.seq = cursor.seq

    async def after(self, limit: int) -> list[ExportRecord]:
        return await self._feed.after(self.seq, limit)

    async def advance(self, last: ExportRecord) -> None:
        await asyncio.to_thread(self._cursor.save, last)
        self.seq = last.seq


class LocalSource:
    """``ExportSource`` on the embedded log: ``feed`` and a cursor file (module docstring)."""

    def __init__(self, feed: AuditFeed, cursor: ExportCursor) -> None:
        self.feed = feed
        self.cursor = cursor

    @asynccontextmanager
    async def claim(self) -> AsyncIterator[Claim | None]:
        """See ``ExportSource.claim``: always granted."""
        yield _LocalClaim(self.feed, self.cursor)

    async def aclose(self) -> None:
        """Close the feed."""
        await self.feed.aclose()

"""The embedded ``RevocationStore``: revoked access-token ids (``jti``) in SQLite, shared by the gateway and the CLI.

``bastion token revoke JTI`` runs in another process; the gateway must refuse
the token on its very next request. ``revoke`` commits the row, then replaces
a stamp file beside the database (``<db>.revocations``); ``is_revoked`` keeps
the revoked ids in memory and re-reads the table only when that stamp has
changed. The stamp is looked at on every call, or at most every
``recheck_s`` seconds when that is set: the gateway sets 50 ms, so a
revocation takes effect within 50 ms of ``revoke`` returning. (A point query
per call cost 25-30 µs on a loaded gateway, and even a ``stat`` can wait
behind the audit writer's fsync on the same file system.) A row written to
the table by other means than ``revoke`` is seen after the next ``revoke`` or
restart. Only the table ``revoked_tokens`` is
created or touched here; the file is shared with other modules' tables.

The protocol is ``bastion.stores.revocations.RevocationStore``. Writes run on a worker
thread; ``is_revoked`` reads the table on the caller's thread, only when the stamp changed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["RevocationList"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS revoked_tokens ("
    "jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL, revoked_at INTEGER NOT NULL)"
)
_LOAD = "SELECT jti FROM revoked_tokens"
_INSERT = (
    "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) VALUES (?, ?, ?) "
    "ON CONFLICT (jti) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)"
)


class RevocationList:
    """``RevocationStore`` in table ``revoked_tokens`` of the SQLite file ``path``.

    Opens (creating if needed) the file in WAL mode when constructed: a local file, so there
    is no separate start. Safe to share between threads (one lock). Use ``async with`` (or
    ``with`` in synchronous code) or call :meth:`close`. Database errors propagate as
    ``sqlite3.Error``; callers must fail closed.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0, recheck_s: float = 0.0) -> None:
        """Open ``path`` (parent directory must exist); ``busy_timeout_s`` bounds waits for writers;
        ``recheck_s`` is how stale (seconds) the in-memory list may be (0: checked on every call)."""
        self._path = path
        self._recheck_s = recheck_s
        self._checked = float("-inf")
        self._stamp = path.with_name(path.name + ".revocations")
        self._seen: tuple[int, int] | None = None
        self._revoked: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error:
            self._db.close()
            raise

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    async def revoke(self, jti: str, expires_at: int, *, now: float | None = None) -> None:
        """Record ``jti`` as revoked until ``expires_at`` (the token's ``exp``, epoch s; kept until pruned).

        Idempotent: revoking again keeps the first ``revoked_at`` and the later
        ``expires_at``. Raises ``ValueError`` for an empty ``jti``.
        """
        if not isinstance(jti, str) or not jti:
            raise ValueError("jti must be a non-empty string")
        revoked_at = int(time.time() if now is None else now)
        await asyncio.to_thread(self._revoke, jti, int(expires_at), revoked_at)

    def _revoke(self, jti: str, expires_at: int, revoked_at: int) -> None:
        with self._lock:
            self._db.execute(_INSERT, (jti, expires_at, revoked_at))
            self._touch_stamp()
            self._revoked = self._revoked | {jti}  # this process sees its own revocation at once

    def _touch_stamp(self) -> None:
        scratch = self._stamp.with_name(f"{self._stamp.name}.{os.getpid()}.{threading.get_ident()}")
        scratch.write_text(str(time.time_ns()), encoding="ascii")
        os.replace(scratch, self._stamp)  # a new inode: readers notice even within one mtime tick

    def _stamp_version(self) -> tuple[int, int]:
        try:
            st = os.stat(self._stamp)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def is_revoked(self, jti: str) -> bool:
        """True if any process revoked ``jti`` (RFC 7009 section 2.2: a revoked token is no longer valid).

        Raises ``OSError`` or ``sqlite3.Error`` when the list cannot be read (callers fail closed).
        """
        if self._recheck_s:
            now = time.monotonic()
            if now - self._checked < self._recheck_s:
                return jti in self._revoked
            self._checked = now
        version = self._stamp_version()
        if version != self._seen:
            with self._lock:
                rows = self._db.execute(_LOAD).fetchall()
                self._revoked = frozenset(row[0] for row in rows)
                self._seen = version
        return jti in self._revoked

    async def prune(self, now: float) -> int:
        """Delete revocations whose token expired before ``now`` (epoch s); returns how many.

        Safe because an expired token is refused on ``exp`` alone. Other processes re-read
        the list (the stamp changes) only when something was deleted.
        """
        return await asyncio.to_thread(self._prune, int(now))

    def _prune(self, now: int) -> int:
        with self._lock:
            pruned = int(self._db.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (now,)).rowcount)
            if pruned:
                self._revoked = frozenset(row[0] for row in self._db.execute(_LOAD).fetchall())
                self._touch_stamp()
            return pruned

    async def start(self) -> None:
        """Nothing to do: the file was opened when the list was built."""

    async def close(self) -> None:
        """Close the database connection (idempotent)."""
        self._close()

    def _close(self) -> None:
        with self._lock:
            self._db.close()

    async def __aenter__(self) -> Self:
        """Return self; the connection closes on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the connection."""
        self._close()

    def __enter__(self) -> Self:
        """Return self (synchronous callers that only check); the connection closes on exit."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the connection."""
        self._close()

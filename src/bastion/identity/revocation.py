"""Revoked access-token ids (``jti``), shared through SQLite between the gateway and the CLI.

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
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType

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
    """The set of revoked token ids, persisted in table ``revoked_tokens`` of the SQLite file ``path``.

    Opens (creating if needed) the file in WAL mode. Safe to share between
    threads (one lock). Use as a context manager or call :meth:`close`.
    Database errors propagate as ``sqlite3.Error``; callers must fail closed.
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

    def revoke(self, jti: str, expires_at: int, *, now: float | None = None) -> None:
        """Record ``jti`` as revoked until ``expires_at`` (the token's ``exp``, epoch s; kept until pruned).

        Idempotent: revoking again keeps the first ``revoked_at`` and the later
        ``expires_at``. Raises ``ValueError`` for an empty ``jti``.
        """
        if not isinstance(jti, str) or not jti:
            raise ValueError("jti must be a non-empty string")
        revoked_at = int(time.time() if now is None else now)
        with self._lock:
            self._db.execute(_INSERT, (jti, int(expires_at), revoked_at))
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

    def prune(self, now: float | None = None) -> int:
        """Delete revocations whose token expired before ``now`` (epoch s); returns how many.

        Safe because an expired token is refused on ``exp`` alone.
        """
        stamp = int(time.time() if now is None else now)
        with self._lock:
            pruned = self._db.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (stamp,)).rowcount
            self._touch_stamp()
            return int(pruned)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> RevocationList:
        """Return self; the connection closes on exit."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the connection."""
        self.close()

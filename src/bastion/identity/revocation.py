"""Revoked access-token ids (``jti``), shared through SQLite between the gateway and the CLI.

``bastion token revoke JTI`` runs in another process; the gateway must refuse
the token on its very next request. ``is_revoked`` therefore reads the
database on every call: an indexed point query on the primary key in an
autocommit (fresh) read transaction, which sees every committed revocation
and costs about 3 µs. Only the table ``revoked_tokens`` is created or touched
here; the file is shared with other modules' tables.
"""

from __future__ import annotations

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
_LOOKUP = "SELECT 1 FROM revoked_tokens WHERE jti = ?"
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

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        """Open ``path`` (parent directory must exist); ``busy_timeout_s`` bounds waits for writers."""
        self._path = path
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

    def is_revoked(self, jti: str) -> bool:
        """True if any process revoked ``jti`` (RFC 7009 section 2.2: a revoked token is no longer valid)."""
        with self._lock:
            return self._db.execute(_LOOKUP, (jti,)).fetchone() is not None

    def prune(self, now: float | None = None) -> int:
        """Delete revocations whose token expired before ``now`` (epoch s); returns how many.

        Safe because an expired token is refused on ``exp`` alone.
        """
        stamp = int(time.time() if now is None else now)
        with self._lock:
            return self._db.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (stamp,)).rowcount

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

"""The durable rate counter: sliding-window logs as rows of the data directory's SQLite file.

For quotas that must survive a restart (500 calls a day) and for replicas sharing one
file. Each hit is a row ``(key, at, id)`` of ``rate_hits``; a ``hit`` is ONE ``BEGIN
IMMEDIATE`` transaction (``bastion.stores.sqlite.SQLiteTables._run``) that deletes the
key's rows that left the window, counts the rest and adds a row when under the limit, so
two processes on one file never admit more than the limit between them. ``peek`` only
reads. A key holds at most ``limit`` rows (a refused hit adds none); trimming deletes a
range of the ``(key, at)`` index and counting reads only that key's entries.

A row leaves the window when ``now - at >= window_s``, in doubles, as ``MemoryRateCounter``
decides: ``counters.left_window_by`` gives the last time that has, so both answer alike to the last bit.
Rows of keys never hit again stay until ``purge`` deletes them.
"""

from __future__ import annotations

from typing import Any

from bastion.stores.counters import RateDecision, check_rate, left_window_by
from bastion.stores.sqlite import SQLiteTables

__all__ = ["SQLiteRateCounter"]

_DDL = """
CREATE TABLE IF NOT EXISTS rate_hits (key TEXT NOT NULL, at REAL NOT NULL, id INTEGER PRIMARY KEY);
CREATE INDEX IF NOT EXISTS rate_hits_key_at ON rate_hits (key, at);
"""


def _limit_th(conn: Any, key: str, limit: int, count: int, left_by: float) -> float | None:
    """The time of the ``limit``-th newest of the ``count`` hits on ``key`` after ``left_by`` (None
    below ``limit``): it leaving the window lets the next hit in. ``conn`` is the transaction's
    ``sqlite3.Connection`` (typed ``Any``: only the modules the layout test lists import sqlite3)."""
    if count < limit:
        return None
    (at,) = conn.execute(
        "SELECT at FROM rate_hits WHERE key = ? AND at > ? ORDER BY at LIMIT 1 OFFSET ?", (key, left_by, count - limit)
    ).fetchone()
    return float(at)


def _peek(conn: Any, key: str, limit: int, left_by: float) -> tuple[int, float | None]:
    """The hits on ``key`` after ``left_by`` and, from ``limit`` on, the ``limit``-th newest's time."""
    (count,) = conn.execute("SELECT count(*) FROM rate_hits WHERE key = ? AND at > ?", (key, left_by)).fetchone()
    return count, _limit_th(conn, key, limit, count, left_by)


def _hit(conn: Any, key: str, limit: int, left_by: float, now: float) -> tuple[bool, int, float | None]:
    """Trim, count and (under the limit) add one hit, in the caller's transaction on ``conn``; returns
    whether it was added, the hits now in the window and, from ``limit`` on, the ``limit``-th newest's time."""
    conn.execute("DELETE FROM rate_hits WHERE key = ? AND at <= ?", (key, left_by))
    (count,) = conn.execute("SELECT count(*) FROM rate_hits WHERE key = ?", (key,)).fetchone()
    allowed = count < limit
    if allowed:
        conn.execute("INSERT INTO rate_hits (key, at) VALUES (?, ?)", (key, now))
        count += 1
    return allowed, count, _limit_th(conn, key, limit, count, left_by)


def _decision(
    allowed: bool, count: int, limit_th: float | None, *, limit: int, window_s: float, now: float
) -> RateDecision:
    """The answer for ``count`` hits in the window, computed as ``MemoryRateCounter`` computes it."""
    remaining = max(0, limit - count)
    retry_after = 0.0 if remaining or limit_th is None else max(0.0, window_s - (now - limit_th))
    return RateDecision(allowed, remaining, retry_after)


class SQLiteRateCounter(SQLiteTables):
    """``RateCounter`` on SQLite at ``path`` (the data directory's ``bastion.db``); ``start`` before use.

    Errors of the file (``sqlite3.Error``, ``OSError``: ``bastion.stores.sqlite.STORE_ERRORS``)
    propagate; a transaction waits up to ``busy_timeout_s`` for another process's.
    """

    DDL = _DDL
    LABEL = "rate counter"

    async def hit(self, key: str, limit: int, window_s: float, *, now: float) -> RateDecision:
        """See ``RateCounter.hit``: one ``BEGIN IMMEDIATE`` transaction."""
        check_rate(limit, window_s)
        left_by = left_window_by(now, window_s)
        allowed, count, limit_th = await self._run(lambda c: _hit(c, key, limit, left_by, now))
        return _decision(allowed, count, limit_th, limit=limit, window_s=window_s, now=now)

    async def peek(self, key: str, limit: int, window_s: float, *, now: float) -> RateDecision:
        """See ``RateCounter.peek``: one read transaction."""
        check_rate(limit, window_s)
        left_by = left_window_by(now, window_s)
        count, limit_th = await self._run(lambda c: _peek(c, key, limit, left_by), write=False)
        return _decision(count < limit, count, limit_th, limit=limit, window_s=window_s, now=now)

    async def reset(self, key: str) -> None:
        """See ``RateCounter.reset``."""
        await self._run(lambda c: c.execute("DELETE FROM rate_hits WHERE key = ?", (key,)))

    async def purge(self, before: float) -> int:
        """Delete every hit older than ``before`` (epoch seconds), whatever its key; returns how
        many. Housekeeping for keys never hit again: call it now and then with ``before`` = now
        minus the longest window any rule uses, which changes no answer."""
        deleted: int = await self._run(lambda c: c.execute("DELETE FROM rate_hits WHERE at < ?", (before,)).rowcount)
        return deleted

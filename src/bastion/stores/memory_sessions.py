"""The embedded session store: sessions in this process's memory, with idle expiry.

Atomic per call because no method awaits while it reads and writes (one event loop).
``Session`` values are immutable, so the store hands out the stored value itself; a
change stores a new value.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable

from bastion.stores.sessions import Session

__all__ = ["MemorySessionStore"]

_TOUCH_S = 1.0
"""``get`` refreshes ``last_seen`` when it is at least this old (seconds): an idle timer of
minutes loses nothing, and a busy session is not copied on every call."""


class MemorySessionStore:
    """``SessionStore`` in memory; a session idle for more than ``idle_s`` seconds expires.

    At most ``max_sessions`` are kept: past that, ``create`` drops the idle ones, then the
    least recently used tenth. ``on_forget`` is called with every session the store drops by
    itself (idle expiry, eviction), not on ``delete`` or ``drain``. ``clock`` gives epoch
    seconds (tests inject one). Not thread-safe: one instance per event loop.
    """

    def __init__(
        self,
        idle_s: float = 3600.0,
        max_sessions: int = 100_000,
        on_forget: Callable[[Session], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions: dict[str, Session] = {}
        self._idle_s = idle_s
        self._max = max_sessions
        self._on_forget = on_forget
        self._clock = clock

    async def create(self, route: str, principal_key: str) -> Session:
        """See ``SessionStore.create``."""
        now = self._clock()
        if len(self._sessions) >= self._max:
            self._evict(now)
        session = Session(
            id=secrets.token_urlsafe(32), route=route, principal_key=principal_key, created=now, last_seen=now
        )
        self._sessions[session.id] = session
        return session

    async def get(self, session_id: str, route: str, principal_key: str) -> Session | None:
        """See ``SessionStore.get``."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self._idle_s:
            self._forget(session_id)
            return None
        if session.route != route or not secrets.compare_digest(session.principal_key, principal_key):
            return None
        if now - session.last_seen >= _TOUCH_S:  # idle time is kept to the second, not rewritten per call
            session = self._sessions[session_id] = dataclasses.replace(session, last_seen=now)
        return session

    async def update(
        self, session_id: str, *, upstream_id: str | None = None, protocol_version: str | None = None
    ) -> Session | None:
        """See ``SessionStore.update``."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        session = dataclasses.replace(
            session,
            upstream_id=session.upstream_id if upstream_id is None else upstream_id,
            protocol_version=session.protocol_version if protocol_version is None else protocol_version,
        )
        self._sessions[session_id] = session
        return session

    async def delete(self, session_id: str) -> None:
        """See ``SessionStore.delete``."""
        self._sessions.pop(session_id, None)

    async def sweep(self, now: float | None = None) -> int:
        """See ``SessionStore.sweep``."""
        return self._sweep(self._clock() if now is None else now)

    async def count(self) -> int:
        """The sessions this store holds (idle ones count until swept). For the metrics."""
        return len(self._sessions)

    async def drain(self) -> list[Session]:
        """See ``SessionStore.drain``: every session."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        return sessions

    def _sweep(self, now: float) -> int:
        expired = [sid for sid, s in self._sessions.items() if now - s.last_seen > self._idle_s]
        for sid in expired:
            self._forget(sid)
        return len(expired)

    def _forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None and self._on_forget is not None:
            self._on_forget(session)

    def _evict(self, now: float) -> None:
        self._sweep(now)
        if len(self._sessions) >= self._max:
            oldest = sorted(self._sessions.values(), key=lambda s: s.last_seen)[: self._max // 10 or 1]
            for session in oldest:
                self._forget(session.id)

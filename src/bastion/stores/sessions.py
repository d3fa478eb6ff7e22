"""MCP sessions, bound to the principal that opened them.

A session id is Bastion's own (256 random bits, URL-safe); it maps to the
upstream's session id, which the client never sees. A session presented by a
principal other than the one that opened it is treated as unknown, so the
gateway answers 404 exactly as for an id that never existed (MCP 2025-11-25
basic/transports, "Session Management"). Sessions never authenticate: the
bearer token is checked on every request before the session is looked up.

``SessionStore`` is the small async interface; ``MemorySessionStore`` is the
embedded default (one process). Shared backends come with multi-replica
support.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["MemorySessionStore", "RequestLedger", "SentRequest", "Session", "SessionStore", "rpc_key"]


@dataclass(frozen=True, slots=True)
class SentRequest:
    """A request the client sent on a session, as the message filters need it.

    ``method`` is its JSON-RPC method, ``target`` the tool name / resource URI /
    prompt name the classify stage found (or ``None``), ``first_page`` whether it
    asked for the first page of a list (no ``cursor``).
    """

    rpc_id: Any
    method: str
    target: str | None = None
    first_page: bool = True


def rpc_key(rpc_id: Any) -> tuple[type, Any] | None:
    """A JSON-RPC id as a dict key that tells ``1`` from ``"1"`` (JSON-RPC 2.0 section 5);
    ``None`` for anything that is not a valid id (``null``, booleans, objects)."""
    return (type(rpc_id), rpc_id) if isinstance(rpc_id, (str, int)) and not isinstance(rpc_id, bool) else None


class RequestLedger:
    """The last ``size`` requests a client sent on one session, by JSON-RPC id.

    A response that arrives on a GET stream (a POST stream the upstream replays
    after ``Last-Event-ID``, MCP 2025-11-25 basic/transports "Resumability and
    Redelivery") is relayed only when it answers a request recorded here, and is
    inspected as the answer to that request.
    """

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int = 1024) -> None:
        self._entries: OrderedDict[tuple[type, Any], SentRequest] = OrderedDict()
        self._size = size

    def remember(self, request: SentRequest) -> None:
        """Record a request about to be forwarded (the oldest is forgotten past ``size``)."""
        key = rpc_key(request.rpc_id)
        if key is None:
            return
        self._entries[key] = request
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def find(self, rpc_id: Any) -> SentRequest | None:
        """The recorded request with id ``rpc_id``, or ``None``."""
        key = rpc_key(rpc_id)
        return None if key is None else self._entries.get(key)


@dataclass(slots=True)
class Session:
    """One downstream MCP session on one route.

    ``principal_key`` is ``Principal.key`` of the opener; ``upstream_id`` the
    upstream's ``Mcp-Session-Id`` (HTTP upstreams only); ``protocol_version``
    the negotiated version; times are ``time.monotonic()`` seconds; ``requests``
    the requests its client sent (``RequestLedger``), for the message filters.
    """

    id: str
    route: str
    principal_key: str
    protocol_version: str | None = None
    upstream_id: str | None = None
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    requests: RequestLedger = field(default_factory=RequestLedger, repr=False, compare=False)


class SessionStore(Protocol):
    """Where sessions live. Every method is safe to call concurrently."""

    async def create(self, route: str, principal_key: str) -> Session:
        """Open a new session for ``principal_key`` on ``route`` and return it."""
        ...

    async def get(self, session_id: str, route: str, principal_key: str) -> Session | None:
        """The session if it exists on ``route`` AND belongs to ``principal_key``; else ``None``."""
        ...

    async def delete(self, session_id: str) -> None:
        """Forget a session (idempotent)."""
        ...


class MemorySessionStore:
    """In-process session store with idle expiry (``idle_s`` seconds).

    ``on_forget`` is called with every session the store drops by itself (idle
    expiry, eviction past ``max_sessions``) so that its upstream session can be
    ended too; an explicit ``delete`` does not call it (the caller ends that
    upstream session itself).
    """

    def __init__(
        self,
        idle_s: float = 3600.0,
        max_sessions: int = 100_000,
        on_forget: Callable[[Session], None] | None = None,
    ) -> None:
        self._sessions: dict[str, Session] = {}
        self._idle_s = idle_s
        self._max = max_sessions
        self._on_forget = on_forget

    def _forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None and self._on_forget is not None:
            self._on_forget(session)

    def sweep(self, now: float | None = None) -> int:
        """Drop every session idle for longer than ``idle_s``; return how many."""
        now = time.monotonic() if now is None else now
        expired = [sid for sid, s in self._sessions.items() if now - s.last_seen > self._idle_s]
        for sid in expired:
            self._forget(sid)
        return len(expired)

    def drain(self) -> list[Session]:
        """Remove and return every session (shutdown: their upstream sessions are ended by the caller)."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        return sessions

    async def create(self, route: str, principal_key: str) -> Session:
        """Open a session; the oldest idle sessions are evicted past ``max_sessions``."""
        if len(self._sessions) >= self._max:
            self._evict(time.monotonic())
        session = Session(id=secrets.token_urlsafe(32), route=route, principal_key=principal_key)
        self._sessions[session.id] = session
        return session

    async def get(self, session_id: str, route: str, principal_key: str) -> Session | None:
        """Look up a session bound to this route and principal; refreshes its idle timer."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_seen > self._idle_s:
            self._forget(session_id)
            return None
        if session.route != route or not secrets.compare_digest(session.principal_key, principal_key):
            return None
        session.last_seen = now
        return session

    async def delete(self, session_id: str) -> None:
        """Forget a session."""
        self._sessions.pop(session_id, None)

    def _evict(self, now: float) -> None:
        self.sweep(now)
        if len(self._sessions) >= self._max:
            oldest = sorted(self._sessions.values(), key=lambda s: s.last_seen)[: self._max // 10 or 1]
            for session in oldest:
                self._forget(session.id)

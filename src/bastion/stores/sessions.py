"""MCP sessions, bound to the principal that opened them.

A session id is Bastion's own (256 random bits, URL-safe); it maps to the
upstream's session id, which the client never sees. A session presented by a
principal other than the one that opened it is treated as unknown, so the
gateway answers 404 exactly as for an id that never existed (MCP 2025-11-25
basic/transports, "Session Management"). Sessions never authenticate: the
bearer token is checked on every request before the session is looked up.

``SessionStore`` is the small async interface; ``Session`` is immutable (a change goes
through ``SessionStore.update``, which returns the new value), and its times are wall-clock
epoch seconds so that replicas sharing a backend agree. The embedded backend is
``bastion.stores.memory_sessions.MemorySessionStore`` (one process); the contract suite
is ``tests/unit/stores/test_contract_sessions.py``.

``Session.requests`` (a ``RequestLedger``) is the requests a client sent on the session, which the
message filters match the upstream's answers against. Its entries live in the memory of the
process that forwarded the requests: a backend keeps one ledger per session id beside the stored
session and hands the same ledger out with every ``Session`` it returns; it is never serialized.
A shared backend gives each ledger a ``SharedRequests`` too, where the entry of a request whose
answer the upstream streams (a POST answered with ``text/event-stream``, the only answer the
upstream can replay after ``Last-Event-ID``) is also recorded (``share``), bound to the session,
so that a replica the client resumes that stream on finds it (``find_shared``) and relays the
replayed answer as the answer to that request. Only ``method``, ``target`` and ``first_page`` are
shared, never the arguments. An answer for a request found in neither is dropped (deny by
construction), never relayed unfiltered; so is one whose shared lookup failed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["RequestLedger", "SentRequest", "Session", "SessionStore", "SharedRequests", "rpc_key"]


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


class SharedRequests(Protocol):
    """Where the ledgers of a shared session store share entries across replicas (one per store:
    each method names the session). Both raise the backend's error when it cannot answer."""

    async def record(self, session_id: str, request: SentRequest) -> bool:
        """Record ``request`` as sent on ``session_id``; ``False`` when the session is gone."""
        ...

    async def find(self, session_id: str, rpc_id: Any) -> SentRequest | None:
        """The request with id ``rpc_id`` recorded on ``session_id`` by any replica, or ``None``."""
        ...


class RequestLedger:
    """The last ``size`` requests a client sent on one session, by JSON-RPC id.

    A response that arrives on a GET stream (a POST stream the upstream replays
    after ``Last-Event-ID``, MCP 2025-11-25 basic/transports "Resumability and
    Redelivery") is relayed only when it answers a request recorded here (``find``)
    or, with a shared session store, shared by any replica (``find_shared``), and is
    inspected as the answer to that request. ``remember`` and ``find`` do no I/O;
    ``share`` and ``find_shared`` reach ``shared`` (nothing without one).
    """

    __slots__ = ("_entries", "_session_id", "_shared", "_size")

    def __init__(self, size: int = 1024, *, session_id: str = "", shared: SharedRequests | None = None) -> None:
        self._entries: OrderedDict[tuple[type, Any], SentRequest] = OrderedDict()
        self._size = size
        self._session_id = session_id
        self._shared = shared

    @property
    def shared(self) -> bool:
        """Whether other replicas can see what ``share`` records."""
        return self._shared is not None

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
        """The request with id ``rpc_id`` recorded in this process, or ``None``."""
        key = rpc_key(rpc_id)
        return None if key is None else self._entries.get(key)

    async def share(self, request: SentRequest) -> bool:
        """Record ``request`` where other replicas find it (its answer is a stream the client may
        resume elsewhere); ``False`` when there is nowhere to share it or the session is gone.
        Raises the shared backend's error when it cannot answer."""
        if self._shared is None or rpc_key(request.rpc_id) is None:
            return False
        return await self._shared.record(self._session_id, request)

    async def find_shared(self, rpc_id: Any) -> SentRequest | None:
        """The request with id ``rpc_id`` that any replica shared on this session (then remembered
        here too), or ``None``. Raises the shared backend's error when it cannot answer."""
        if self._shared is None or rpc_key(rpc_id) is None:
            return None
        found = await self._shared.find(self._session_id, rpc_id)
        if found is not None:
            self.remember(found)
        return found


@dataclass(frozen=True, slots=True)
class Session:
    """One downstream MCP session on one route, as the store returned it (immutable).

    ``principal_key`` is ``Principal.key`` of the opener; ``upstream_id`` the
    upstream's ``Mcp-Session-Id`` (HTTP upstreams only); ``protocol_version``
    the negotiated version (stdio routes, where Bastion answers ``initialize``);
    ``created`` and ``last_seen`` are epoch seconds (``time.time()``); ``requests``
    the requests its client sent (``RequestLedger``: those sent through this process, and
    with a shared store those other replicas shared; one object for every ``Session`` value
    of one id), for the message filters.
    """

    id: str
    route: str
    principal_key: str
    created: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    protocol_version: str | None = None
    upstream_id: str | None = None
    requests: RequestLedger = field(default_factory=RequestLedger, repr=False, compare=False)


class SessionStore(Protocol):
    """Where sessions live. Every method is safe to call concurrently; a returned ``Session``
    is a snapshot (later changes return new values, never alter it).

    A backend takes an ``on_forget`` callback and calls it with every session it drops by
    itself (idle expiry, eviction), so that its upstream session can be ended; ``delete``
    and ``drain`` do not call it (their caller ends the upstream session itself).
    """

    async def create(self, route: str, principal_key: str) -> Session:
        """Open a new session for ``principal_key`` on ``route`` and return it."""
        ...

    async def get(self, session_id: str, route: str, principal_key: str) -> Session | None:
        """The session if it exists on ``route`` AND belongs to ``principal_key``, with its idle
        timer restarted; else ``None`` (an idle-expired session is dropped)."""
        ...

    async def update(
        self, session_id: str, *, upstream_id: str | None = None, protocol_version: str | None = None
    ) -> Session | None:
        """Set the fields given (``None`` leaves a field as it is) and return the new value;
        ``None`` when the session no longer exists."""
        ...

    async def delete(self, session_id: str) -> None:
        """Forget a session (idempotent)."""
        ...

    async def sweep(self, now: float | None = None) -> int:
        """Drop every session idle at ``now`` (epoch s, default the clock); returns how many."""
        ...

    async def drain(self) -> list[Session]:
        """Remove and return the sessions to end at shutdown (the caller ends their upstream
        sessions): the embedded backend, every session; a shared one, none that another
        replica still serves."""
        ...

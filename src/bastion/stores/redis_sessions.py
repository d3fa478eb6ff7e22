"""The shared ``SessionStore``: MCP sessions in Redis, so a session opened through one replica
continues on any other.

Layout (every key under ``prefix``):

- ``<prefix>s:<id>``: a hash with the session's ``route``, ``principal`` (``Principal.key``),
  ``created``, ``last_seen`` (epoch seconds, as text), ``protocol_version`` and ``upstream_id``
  (absent when unset); Redis expires it ``idle_s`` plus a minute after its last use, so a session
  nobody sweeps does not stay forever;
- ``<prefix>idle``: a sorted set of session ids scored by ``last_seen``, which ``sweep`` reads to
  find the idle ones without scanning the keyspace.

Idle expiry is judged on ``last_seen`` against the store's clock (wall-clock epoch seconds, the
same on every replica within their clock skew), not on Redis's own expiry. Each operation on one
session is one Lua script (Redis runs a script atomically), so concurrent replicas cannot
resurrect a deleted session or lose an update: ``get`` checks expiry, route and owner and touches
``last_seen`` (at most once a second) in one step; ``update`` changes only a session that still
exists; ``sweep`` removes each idle session with a script that re-checks it, and only the replica
whose script removed a session (a ``get`` that found it idle, or ``sweep``) reports it to
``on_forget``, which ends its upstream session once.
``drain`` returns nothing: at shutdown the other replicas still serve the sessions.

The request ledger (``Session.requests``) lives in the memory of each process, as
``bastion.stores.sessions`` explains: this store keeps one per session id it has handed out, the
newest ``ledgers`` of them, each with the store's ``RedisSharedRequests``
(``bastion.stores.redis_ledger``: ``<prefix>req:<id>`` and ``<prefix>req-order:<id>``), where the
entries of requests answered with an event stream are shared; those keys go with the session
(``delete``, idle expiry).

Errors: every method raises ``redis.exceptions.RedisError`` (or ``OSError``) when Redis cannot be
reached; the session stage turns that into a refusal (fail closed).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bastion.stores.redis_ledger import RedisSharedRequests
from bastion.stores.redis_store import RedisStore
from bastion.stores.sessions import RequestLedger, Session

__all__ = ["RedisSessionStore"]

_TOUCH_S = 1.0
"""``get`` refreshes ``last_seen`` when it is at least this old (seconds), as the embedded store."""
_GRACE_S = 60
"""Redis drops a session key this long after it would have gone idle (a backstop for ``sweep``)."""

# KEYS[1] session hash, KEYS[2] idle set, KEYS[3..4] its ledger's keys; ARGV: id, route, principal, now,
# idle_s, touch_s, ttl_ms.
# Returns {1, hash as a flat list} for the session, {0, hash} when it had gone idle (this call deleted
# it), or nil (unknown, or another route or owner).
_GET = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return nil end
local s = {}
for i = 1, #fields, 2 do s[fields[i]] = fields[i + 1] end
local now = tonumber(ARGV[4])
if now - tonumber(s['last_seen']) > tonumber(ARGV[5]) then
  redis.call('DEL', KEYS[1], KEYS[3], KEYS[4]); redis.call('ZREM', KEYS[2], ARGV[1]); return {0, fields}
end
if s['route'] ~= ARGV[2] or s['principal'] ~= ARGV[3] then return nil end
if now - tonumber(s['last_seen']) >= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'last_seen', ARGV[4]); redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  for i = 1, #fields, 2 do if fields[i] == 'last_seen' then fields[i + 1] = ARGV[4] end end
end
return {1, fields}
"""
# KEYS[1] session hash; ARGV: field, value, field, value, ... ('' leaves a field as it is).
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
for i = 1, #ARGV, 2 do if ARGV[i + 1] ~= '' then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end end
return redis.call('HGETALL', KEYS[1])
"""
# KEYS[1] session hash, KEYS[2] idle set, KEYS[3..4] its ledger's keys; ARGV: id, cutoff. Removes the
# session if it is idle at the cutoff (last_seen < cutoff) or gone; returns its hash when this call
# removed it, else nil.
_EXPIRE = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then redis.call('ZREM', KEYS[2], ARGV[1]); redis.call('DEL', KEYS[3], KEYS[4]); return nil end
local seen = tonumber(redis.call('HGET', KEYS[1], 'last_seen'))
if seen >= tonumber(ARGV[2]) then return nil end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4]); redis.call('ZREM', KEYS[2], ARGV[1])
return fields
"""


class RedisSessionStore(RedisStore):
    """``SessionStore`` in the Redis at ``url`` under key ``prefix`` (module docstring); a session
    idle for more than ``idle_s`` seconds expires. ``on_forget`` is called with every session this
    process's ``get`` or ``sweep`` dropped for idleness (not on ``delete`` or ``drain``); ``clock``
    gives epoch seconds (tests inject one); ``ledgers`` bounds the request ledgers kept, ``ledger_size``
    the entries of each (in this process, and shared in Redis). ``start``/``close`` or ``async with``.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "bastion:session:",
        idle_s: float = 3600.0,
        on_forget: Callable[[Session], None] | None = None,
        clock: Callable[[], float] = time.time,
        ledgers: int = 100_000,
        ledger_size: int = 1024,
    ) -> None:
        super().__init__(url, prefix)
        self._idle_key = f"{prefix}idle"
        self._idle_s = idle_s
        self._ttl_ms = int((idle_s + _GRACE_S) * 1000)
        self._on_forget = on_forget
        self._clock = clock
        self._ledgers: OrderedDict[str, RequestLedger] = OrderedDict()
        self._max_ledgers = ledgers
        self._ledger_size = ledger_size
        self._shared = RedisSharedRequests(
            self._redis, prefix, session_key=self._key, ttl_ms=self._ttl_ms, size=ledger_size, clock=clock
        )
        self._get = self._redis.register_script(_GET)
        self._update = self._redis.register_script(_UPDATE)
        self._expire = self._redis.register_script(_EXPIRE)

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}s:{session_id}"

    async def create(self, route: str, principal_key: str) -> Session:
        """See ``SessionStore.create``."""
        now, session_id = self._clock(), secrets.token_urlsafe(32)
        session = Session(
            id=session_id, route=route, principal_key=principal_key, created=now, last_seen=now,
            requests=self._new_ledger(session_id),
        )  # fmt: skip
        key = self._key(session.id)
        fields = {"route": route, "principal": principal_key, "created": repr(now), "last_seen": repr(now)}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, self._ttl_ms)
            pipe.zadd(self._idle_key, {session.id: now})
            await pipe.execute()
        self._keep_ledger(session.id, session.requests)
        return session

    async def get(self, session_id: str, route: str, principal_key: str) -> Session | None:
        """See ``SessionStore.get``."""
        now = self._clock()
        found = await self._get(
            keys=[self._key(session_id), self._idle_key, *self._shared.keys(session_id)],
            args=[session_id, route, principal_key, repr(now), self._idle_s, _TOUCH_S, self._ttl_ms],
        )
        if found is None:
            return None
        live, fields = found
        session = self._session(session_id, fields)
        if not live:  # gone idle: this call removed it
            self._forget(session)
            return None
        return session

    async def update(
        self, session_id: str, *, upstream_id: str | None = None, protocol_version: str | None = None
    ) -> Session | None:
        """See ``SessionStore.update``."""
        fields = await self._update(
            keys=[self._key(session_id)],
            args=["upstream_id", upstream_id or "", "protocol_version", protocol_version or ""],
        )
        return None if fields is None else self._session(session_id, fields)

    async def delete(self, session_id: str) -> None:
        """See ``SessionStore.delete``."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(session_id), *self._shared.keys(session_id))
            pipe.zrem(self._idle_key, session_id)
            await pipe.execute()
        self._ledgers.pop(session_id, None)

    async def sweep(self, now: float | None = None) -> int:
        """See ``SessionStore.sweep``: this replica reports the sessions its own scripts removed."""
        cutoff = (self._clock() if now is None else now) - self._idle_s
        idle = await self._redis.zrangebyscore(self._idle_key, "-inf", f"({cutoff!r}")
        dropped = 0
        for raw in idle:
            session_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            keys = [self._key(session_id), self._idle_key, *self._shared.keys(session_id)]
            fields = await self._expire(keys=keys, args=[session_id, repr(cutoff)])
            if fields is not None:
                dropped += 1
                self._forget(self._session(session_id, fields))
        return dropped

    async def count(self) -> int:
        """The sessions of every replica in the store (its idle index's size, ``ZCARD``: one O(1)
        command; idle ones count until a ``sweep`` or a ``get`` removes them). For the metrics."""
        return int(await self._redis.zcard(self._idle_key))

    async def drain(self) -> list[Session]:
        """See ``SessionStore.drain``: none (the other replicas still serve them)."""
        self._ledgers.clear()
        return []

    def _forget(self, session: Session) -> None:
        self._ledgers.pop(session.id, None)
        if self._on_forget is not None:
            self._on_forget(session)

    def _session(self, session_id: str, flat: list[Any]) -> Session:
        fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
        return Session(
            id=session_id,
            route=fields["route"],
            principal_key=fields["principal"],
            created=float(fields["created"]),
            last_seen=float(fields["last_seen"]),
            protocol_version=fields.get("protocol_version") or None,
            upstream_id=fields.get("upstream_id") or None,
            requests=self._ledger(session_id),
        )

    def _ledger(self, session_id: str) -> RequestLedger:
        """This process's ledger of ``session_id`` (a new one if it has none)."""
        ledger = self._ledgers.get(session_id)
        if ledger is None:
            ledger = self._new_ledger(session_id)
        self._keep_ledger(session_id, ledger)
        return ledger

    def _new_ledger(self, session_id: str) -> RequestLedger:
        return RequestLedger(self._ledger_size, session_id=session_id, shared=self._shared)

    def _keep_ledger(self, session_id: str, ledger: RequestLedger) -> None:
        self._ledgers[session_id] = ledger
        self._ledgers.move_to_end(session_id)
        if len(self._ledgers) > self._max_ledgers:
            self._ledgers.popitem(last=False)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

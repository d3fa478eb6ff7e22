"""The request ledger's shared part in Redis: the entries of requests whose answers the upstream
streams, so that a client resuming such a stream on another replica has its answer relayed there
(``bastion.stores.sessions``, ``RequestLedger.share`` / ``find_shared``).

``RedisSessionStore`` owns one and gives it to every ledger it hands out. Layout, per session id,
under the session store's prefix:

- ``<prefix>req:<id>``: a hash from the request's JSON-RPC id (``i:<n>`` for a number, ``s:<text>``
  for a string, so ``1`` and ``"1"`` stay distinct as ``rpc_key`` keeps them) to its ``method``,
  ``target`` and ``first_page`` as JSON, never its arguments;
- ``<prefix>req-order:<id>``: the same ids in a sorted set scored by when they were recorded, to
  forget the oldest past ``size`` entries.

Both expire with the session's Redis TTL (its idle time plus a minute) after the last entry, and
the session store deletes them with the session. ``record`` is one Lua script that writes only
while the session's hash exists (a session deleted by another replica is not given a ledger again);
``find`` is one ``HGET``. The entries are reachable only through a ``Session`` the store returned,
that is, after the session was checked to be the caller's (its route and principal).

Errors: both methods raise ``redis.exceptions.RedisError`` (or ``OSError``) when Redis cannot be
reached; their callers decide (``HttpForwardStage`` answers on this replica only, the message
filters withhold the answer).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis

from bastion.stores.sessions import SentRequest, rpc_key

__all__ = ["RedisSharedRequests"]

# KEYS[1] session hash, KEYS[2] entries hash, KEYS[3] order set; ARGV: field, value, score, size, ttl_ms.
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[4])
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[3], over)
  for i = 1, #oldest, 2 do redis.call('HDEL', KEYS[2], oldest[i]) end
end
redis.call('PEXPIRE', KEYS[2], ARGV[5]); redis.call('PEXPIRE', KEYS[3], ARGV[5])
return 1
"""


class RedisSharedRequests:
    """``SharedRequests`` on ``redis`` (the session store's client) under ``prefix``: at most ``size``
    entries per session, expiring ``ttl_ms`` after the last one; ``session_key`` names a session's
    hash (``record`` writes only while it exists); ``clock`` gives epoch seconds."""

    def __init__(
        self, redis: Redis, prefix: str, *, session_key: Callable[[str], str], ttl_ms: int, size: int,
        clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self._redis = redis
        self._prefix = prefix
        self._session_key = session_key
        self._ttl_ms = ttl_ms
        self._size = size
        self._clock = clock
        self._record = redis.register_script(_RECORD)

    def keys(self, session_id: str) -> tuple[str, str]:
        """The Redis keys of ``session_id``'s entries (to delete with the session)."""
        return f"{self._prefix}req:{session_id}", f"{self._prefix}req-order:{session_id}"

    async def record(self, session_id: str, request: SentRequest) -> bool:
        """See ``SharedRequests.record``."""
        field = _field(request.rpc_id)
        if field is None:
            return False
        value = json.dumps({"method": request.method, "target": request.target, "first_page": request.first_page})
        entries, order = self.keys(session_id)
        done = await self._record(
            keys=[self._session_key(session_id), entries, order],
            args=[field, value, repr(self._clock()), self._size, self._ttl_ms],
        )
        return bool(done)

    async def find(self, session_id: str, rpc_id: Any) -> SentRequest | None:
        """See ``SharedRequests.find``; an entry that cannot be read counts as none (withheld)."""
        field = _field(rpc_id)
        if field is None:
            return None
        raw = await cast("Awaitable[bytes | None]", self._redis.hget(self.keys(session_id)[0], field))
        return None if raw is None else _request(rpc_id, raw)


def _field(rpc_id: Any) -> str | None:
    key = rpc_key(rpc_id)
    if key is None:
        return None
    return f"{'i' if key[0] is int else 's'}:{rpc_id}"


def _request(rpc_id: Any, raw: bytes | str) -> SentRequest | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    method, target, first_page = entry.get("method"), entry.get("target"), entry.get("first_page")
    if not isinstance(method, str) or not (target is None or isinstance(target, str)) or type(first_page) is not bool:
        return None
    return SentRequest(rpc_id, method, target, first_page)

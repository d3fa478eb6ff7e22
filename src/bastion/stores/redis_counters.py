"""The shared rate counter: a sorted set per key in Redis, trimmed, counted and added to in one Lua script.

Replicas on one Redis count together: a rule allows ``limit`` hits per window in all of
them. The set ``<prefix><key>`` holds one member per counted hit, scored by its time;
``_SCRIPT`` drops the members that left the window, counts the rest and, under the limit,
adds one (a unique member, so hits at the same instant all count) and sets the key to
expire a window after it. Redis runs a script without interleaving any other command, so
the script is the atomic step. ``peek`` runs the same script without a member: it only reads.

A hit leaves the window when ``now - at >= window_s``, in doubles, as ``MemoryRateCounter``
decides: ``counters.left_window_by`` gives the last time that has, so both backends answer
alike to the last bit. Times go to Redis as Python's ``repr`` (exact), never as Lua numbers (which Redis may
print with fewer digits), and come back as Redis prints scores (exact). Redis errors
(``redis.exceptions.RedisError``: unreachable, timeout, a key of another type) propagate.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable
from typing import Self, cast
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from bastion.stores.counters import RateDecision, check_rate, left_window_by

__all__ = ["RedisRateCounter"]

# KEYS[1]: the key's sorted set. ARGV: now, limit, the last time a hit can have and have left the window,
# the member to add ('' to only read), the key's lifetime in milliseconds. Returns {1 if allowed else 0,
# the hits in the window, the limit-th newest's score (nil below the limit)}.
_SCRIPT = """
local limit = tonumber(ARGV[2])
local count
if ARGV[4] == '' then
    count = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[3], '+inf')
else
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
    count = redis.call('ZCARD', KEYS[1])
end
local allowed = count < limit
if allowed and ARGV[4] ~= '' then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    count = count + 1
end
local limit_th = false
if count >= limit then limit_th = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')[2] end
return {allowed and 1 or 0, count, limit_th}
"""


def _where(url: str) -> str:
    """``url`` without its user information (a password), for error messages."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class RedisRateCounter:
    """``RateCounter`` on the Redis at ``url`` (``redis://[[user]:password@]host:port/db``,
    ``rediss://`` for TLS, ``unix://``), its keys named ``<prefix><key>``; ``start`` before use,
    or ``async with``. Connecting gives up after 5 s unless the URL sets ``socket_connect_timeout``.
    Concurrent calls use a pool of connections."""

    def __init__(self, url: str, *, prefix: str = "bastion:rate:") -> None:
        self._url = url
        self._prefix = prefix
        self._connection: tuple[Redis, AsyncScript] | None = None  # the client and its registered _SCRIPT

    async def start(self) -> None:
        """Connect and ``PING``. Raises ``redis.exceptions.ConnectionError`` naming the server
        (without its password) when it does not answer, ``ValueError`` for a malformed URL."""
        client = Redis.from_url(self._url, socket_connect_timeout=5.0)
        try:
            await cast("Awaitable[bool]", client.ping())  # typed sync-or-async by redis-py
        except RedisError as exc:
            await client.aclose()
            raise RedisConnectionError(
                f"the rate counter's Redis at {_where(self._url)} does not answer: {exc}"
            ) from exc
        self._connection = client, client.register_script(_SCRIPT)

    async def close(self) -> None:
        """Close the connections (idempotent)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection[0].aclose()

    async def __aenter__(self) -> Self:
        """``start`` and return the counter."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """``close``."""
        await self.close()

    async def hit(self, key: str, limit: int, window_s: float, *, now: float) -> RateDecision:
        """See ``RateCounter.hit``: one script run."""
        return await self._call(key, limit, window_s, now, member=f"{now!r}:{secrets.token_hex(8)}")

    async def peek(self, key: str, limit: int, window_s: float, *, now: float) -> RateDecision:
        """See ``RateCounter.peek``: the same script, reading only."""
        return await self._call(key, limit, window_s, now, member="")

    async def reset(self, key: str) -> None:
        """See ``RateCounter.reset``: ``DEL``."""
        await self._open()[0].delete(self._prefix + key)

    async def _call(self, key: str, limit: int, window_s: float, now: float, *, member: str) -> RateDecision:
        check_rate(limit, window_s)
        script = self._open()[1]
        args = (repr(now), limit, repr(left_window_by(now, window_s)), member, math.ceil(window_s * 1000))
        allowed, count, limit_th = await script(keys=[self._prefix + key], args=args)
        remaining = max(0, limit - count)
        retry_after = 0.0 if remaining else max(0.0, window_s - (now - float(limit_th)))
        return RateDecision(bool(allowed), remaining, retry_after)

    def _open(self) -> tuple[Redis, AsyncScript]:
        if self._connection is None:
            raise RuntimeError("the Redis rate counter is not open: start() it first")
        return self._connection

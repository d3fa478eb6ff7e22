"""What every Redis-backed store shares: one ``redis.asyncio`` client from the store's URL, a key
prefix, and the lifecycle (``start`` checks that Redis answers, ``ping`` for ``/readyz``, ``close``
releases the pool, or ``async with``). ``RedisSessionStore``, ``RedisActivityStore`` and
``RedisContinuationStore`` build on it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Self, cast

from redis.asyncio import Redis

__all__ = ["RedisStore"]


class RedisStore:
    """A client of the Redis at ``url`` (``redis://`` or ``rediss://``), keys under ``prefix``."""

    def __init__(self, url: str, prefix: str) -> None:
        self._redis: Redis = Redis.from_url(url)
        self._prefix = prefix

    async def start(self) -> None:
        """Check that Redis answers (``RedisError``/``OSError`` when it does not)."""
        await self.ping()

    async def ping(self) -> None:
        """Check that Redis answers (``RedisError``/``OSError`` when it does not): ``/readyz``."""
        await cast("Awaitable[bool]", self._redis.ping())

    async def close(self) -> None:
        """Close the connection pool (idempotent)."""
        await self._redis.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

"""What every Redis-backed store shares: one ``redis.asyncio`` client from the store's URL, a key
prefix, and the lifecycle (``start`` checks that Redis answers, ``ping`` for ``/readyz``, ``close``
releases the pool, or ``async with``). ``RedisSessionStore``, ``RedisActivityStore`` and
``RedisContinuationStore`` build on it. ``subscribe`` is the replicas' notification channels' one
listening loop (policy reloads, approval decisions)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Self, cast

from redis.asyncio import Redis

__all__ = ["RedisStore", "subscribe"]

logger = logging.getLogger(__name__)


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


async def subscribe(
    url: str,
    channel: str,
    on_message: Callable[[dict[str, Any]], Awaitable[None]],
    on_subscribed: Callable[[bool], None],
    *,
    retry_s: float = 1.0,
    keepalive: bool = False,
) -> None:
    """Listen on the Redis pub/sub ``channel`` at ``url`` for good: ``await on_message(message)`` for
    each message (redis-py's dict: ``type``, ``data``, ...), ``on_subscribed(True)`` once subscribed
    and ``on_subscribed(False)`` when the connection is lost (then subscribed again after ``retry_s``
    seconds) or the loop is cancelled. ``keepalive``: TCP keepalive on the connection. Redis pub/sub
    is at-most-once: what is published while not subscribed is not heard. Never raises, except
    ``CancelledError``; a failure is logged."""
    while True:
        try:
            async with Redis.from_url(url, socket_connect_timeout=5, socket_keepalive=keepalive) as client, \
                    client.pubsub() as pubsub:  # fmt: skip
                await pubsub.subscribe(channel)
                on_subscribed(True)
                async for message in pubsub.listen():
                    await on_message(message)
        except asyncio.CancelledError:
            on_subscribed(False)
            raise
        except Exception as exc:  # noqa: BLE001 - subscribed again after a pause
            on_subscribed(False)
            logger.warning("the Redis channel %s failed: %s; subscribing again", channel, exc)
            await asyncio.sleep(retry_s)

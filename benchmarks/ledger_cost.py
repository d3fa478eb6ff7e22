"""What sharing the request ledger in Redis adds to a call (issue 17, a POST's stream resumed on
another replica).

Run: ``.venv/bin/python benchmarks/ledger_cost.py`` (needs the Redis on 127.0.0.1:6379; its keys are
under a prefix of its own, deleted after). Prints, three times each, per call, wall-clock time and
this process's CPU time in microseconds:

- ``json``: a call answered as JSON: ``remember`` in this process's ledger, as before; no Redis
  command (the forward stage shares only a request answered with an event stream);
- ``share``: a call the upstream answers with an event stream: ``share`` (one ``EVALSHA`` round trip
  to Redis on loopback) before the first event is relayed;
- ``find_shared``: a replayed answer on a resumed stream that this process's ledger does not hold
  (one ``HGET``): only on a resumption on another replica.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from bastion.stores.redis_sessions import RedisSessionStore
from bastion.stores.sessions import RequestLedger, SentRequest, Session

REDIS_URL = "redis://127.0.0.1:6379/0"
ALICE = "https://gw.test\x1falice"
CALLS = 5_000
ROUNDS = 3


async def _timed(step: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """Wall and CPU microseconds per call of ``step(n)`` over ``CALLS`` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(CALLS):
        await step(n)
    return (time.perf_counter() - wall) / CALLS * 1e6, (time.process_time() - cpu) / CALLS * 1e6


async def _json_call(session: Session, n: int) -> None:
    """A call answered as JSON: the ledger work is what it was (``remember``); nothing is shared."""
    session.requests.remember(SentRequest(n, "tools/call", "search"))


async def main() -> None:
    prefix = f"bastion-bench:{uuid.uuid4().hex}:"
    try:
        async with (
            RedisSessionStore(REDIS_URL, prefix=prefix) as store,
            RedisSessionStore(REDIS_URL, prefix=prefix) as replica,
        ):
            session = await store.create("bench", ALICE)
            there = await replica.get(session.id, "bench", ALICE)  # the same session on another replica
            if there is None:
                raise RuntimeError("the session is not shared")
            for _ in range(ROUNDS):
                figures = {
                    "json": await _timed(lambda n: _json_call(session, n)),
                    "share": await _timed(lambda n: session.requests.share(SentRequest(n, "tools/call", "search"))),
                    "find_shared": await _timed(lambda n: _find_elsewhere(there.requests, n)),
                }
                print(
                    "  ".join(f"{name}: {wall:.1f} µs wall, {cpu:.1f} µs CPU" for name, (wall, cpu) in figures.items())
                )
    finally:
        async with Redis.from_url(REDIS_URL) as client:
            keys = [key async for key in client.scan_iter(f"{prefix}*")]
            if keys:
                await client.delete(*keys)


async def _find_elsewhere(ledger: RequestLedger, n: int) -> None:
    if await ledger.find_shared(n % 1024 + CALLS - 1024) is None:
        raise RuntimeError("a shared request was not found")


if __name__ == "__main__":
    asyncio.run(main())

"""Tests of the request ledger's shared part in Redis (``RedisSharedRequests``, through the
``RedisSessionStore`` that owns it) on the Redis on loopback, under a key prefix of the test's own,
deleted after; the fault test runs a private ``redis-server`` and kills it.

The entries are bounded per session, expire with the session's TTL, hold the method, target and
first-page flag only, and go with their session (delete, idle expiry found by ``get`` or ``sweep``);
a session deleted by another replica is not given entries again; a Redis that stops answering
makes ``share`` and ``find_shared`` raise (their callers decide; see ``test_pipeline_filters`` and
``test_pipeline_forward_http``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from stores_support import REDIS_URL
from tests.support.bastion_process import free_port
from tests.support.clock import FakeClock
from tests.support.databases import private_redis

from bastion.stores.redis_sessions import RedisSessionStore
from bastion.stores.sessions import SentRequest

ALICE = "https://issuer.test\x1falice"
IDLE_S = 60.0


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    async with Redis.from_url(REDIS_URL) as client:
        yield client


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
async def store(prefix: str, clock: FakeClock) -> AsyncIterator[RedisSessionStore]:
    async with RedisSessionStore(REDIS_URL, prefix=prefix, idle_s=IDLE_S, clock=clock, ledger_size=3) as opened:
        yield opened


async def _keys(redis: Redis, prefix: str) -> list[str]:
    return sorted(key.decode() for key in await redis.keys(f"{prefix}req*"))


async def test_the_entries_hold_what_the_filters_need_under_the_session(
    store: RedisSessionStore, redis: Redis, prefix: str
) -> None:
    session = await store.create("notes", ALICE)
    assert await session.requests.share(SentRequest(1, "tools/call", "search", True))
    assert await session.requests.share(SentRequest("1", "tools/list", None, False))
    assert await _keys(redis, prefix) == [f"{prefix}req-order:{session.id}", f"{prefix}req:{session.id}"]
    entries = {k.decode(): json.loads(v) for k, v in (await redis.hgetall(f"{prefix}req:{session.id}")).items()}
    assert entries == {
        "i:1": {"method": "tools/call", "target": "search", "first_page": True},
        "s:1": {"method": "tools/list", "target": None, "first_page": False},
    }
    ttl_ms = await redis.pttl(f"{prefix}req:{session.id}")
    assert (IDLE_S + 50) * 1000 < ttl_ms <= (IDLE_S + 60) * 1000  # the session's TTL (idle time plus a minute)
    assert 0 < await redis.pttl(f"{prefix}req-order:{session.id}") <= ttl_ms


async def test_past_the_size_the_oldest_entries_are_forgotten(store: RedisSessionStore, clock: FakeClock) -> None:
    session = await store.create("notes", ALICE)
    for n in range(5):
        clock.now += 1
        assert await session.requests.share(SentRequest(n, "tools/call", f"t{n}"))
    clock.now += 1
    assert await session.requests.share(SentRequest(2, "tools/call", "again"))  # recorded again: now the newest
    assert await session.requests.share(SentRequest(5, "tools/call", "t5"))
    found = [await session.requests.find_shared(n) for n in range(6)]
    assert [request.target if request else None for request in found] == [None, None, "again", None, "t4", "t5"]


async def test_the_entries_go_with_their_session(
    store: RedisSessionStore, redis: Redis, prefix: str, clock: FakeClock
) -> None:
    deleted, idle, swept = [await store.create("notes", ALICE) for _ in range(3)]
    for session in (deleted, idle, swept):
        assert await session.requests.share(SentRequest(1, "tools/call", "search"))
    await store.delete(deleted.id)
    clock.now += IDLE_S + 1
    assert await store.get(idle.id, "notes", ALICE) is None  # found idle by get
    assert await store.sweep() == 1  # the third, found idle by sweep
    assert await _keys(redis, prefix) == []
    assert await swept.requests.find_shared(1) is None


async def test_a_session_deleted_by_another_replica_gets_no_entries_again(
    store: RedisSessionStore, redis: Redis, prefix: str
) -> None:
    session = await store.create("notes", ALICE)
    async with RedisSessionStore(REDIS_URL, prefix=prefix, idle_s=IDLE_S) as other:
        await other.delete(session.id)
    assert await session.requests.share(SentRequest(1, "tools/call", "search")) is False
    assert await _keys(redis, prefix) == []


async def test_a_redis_that_stops_answering_makes_share_and_lookup_raise() -> None:
    port = free_port()
    with private_redis(port) as server:
        url = f"redis://127.0.0.1:{port}/0"
        async with RedisSessionStore(url, prefix="bastion-test:", idle_s=IDLE_S) as store:
            session = await store.create("notes", ALICE)
            assert await session.requests.share(SentRequest(1, "tools/call", "search"))
            server.kill()
            server.wait(10)
            with pytest.raises((RedisError, OSError)):
                await session.requests.find_shared(1)
            with pytest.raises((RedisError, OSError)):
                await session.requests.share(SentRequest(2, "tools/call", "search"))

"""The ``ContinuationStore`` contract, run against every backend: ``MemoryContinuationStore`` and
``RedisContinuationStore`` (on the Redis on loopback, under a key prefix of the test's own, deleted
after).

A shared backend joins by adding itself to ``BACKENDS``; every test here must pass unchanged. The
tests at the end open two handles on one shared backend, as two replicas.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from stores_support import REDIS_URL, started

from bastion.stores.continuations import Continuation, ContinuationStore, continuation_key
from bastion.stores.memory_continuations import MemoryContinuationStore
from bastion.stores.redis_continuations import RedisContinuationStore

NOW = float(int(time.time())) + 86_400
"""The callers' clock: a day ahead of the real one, so that Redis's expiry backstop (on Redis's own clock,
a minute past ``expires``) never removes an entry while a test runs, however late in a long run it starts."""

#: Every backend of ``ContinuationStore``, by name: a factory of an empty store (the argument is the
#: test's own Redis key prefix).
BACKENDS: dict[str, Callable[[str], ContinuationStore]] = {
    "memory": lambda _prefix: MemoryContinuationStore(),
    "redis": lambda prefix: RedisContinuationStore(REDIS_URL, prefix=prefix),
}


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[ContinuationStore]:
    """Each backend of ``ContinuationStore``, empty and started."""
    async with started(BACKENDS[request.param](prefix)) as store:
        yield store


def _continuation(origin: str = "d1", *, expires: float = NOW + 60) -> Continuation:
    return Continuation(origin=origin, method="tools/call", target="deploy", arguments={"env": "prod"}, expires=expires)


async def test_a_continuation_is_found_by_exactly_what_it_was_issued_to(store: ContinuationStore) -> None:
    await store.remember("alice", "notes", "state", "s1", _continuation())
    assert await store.find("alice", "notes", "state", "s1", now=NOW) == _continuation()
    for principal, route, kind, value in [
        ("bob", "notes", "state", "s1"),
        ("alice", "billing", "state", "s1"),
        ("alice", "notes", "task", "s1"),
        ("alice", "notes", "state", "s2"),
    ]:
        assert await store.find(principal, route, kind, value, now=NOW) is None  # type: ignore[arg-type]


async def test_parts_do_not_run_into_each_other(store: ContinuationStore) -> None:
    await store.remember("alice", "notes:x", "state", "s1", _continuation())
    assert await store.find("alice:notes", "x", "state", "s1", now=NOW) is None
    assert continuation_key("a", "bc", "state", "v") != continuation_key("ab", "c", "state", "v")


async def test_an_expired_continuation_is_not_found(store: ContinuationStore) -> None:
    await store.remember("alice", "notes", "task", "t1", _continuation(expires=NOW + 10))
    assert await store.find("alice", "notes", "task", "t1", now=NOW + 9.9) is not None
    assert await store.find("alice", "notes", "task", "t1", now=NOW + 10) is None
    assert await store.find("alice", "notes", "task", "t1", now=NOW) is None  # forgotten, not hidden


async def test_remembering_again_replaces(store: ContinuationStore) -> None:
    await store.remember("alice", "notes", "state", "s1", _continuation("d1"))
    await store.remember("alice", "notes", "state", "s1", _continuation("d2"))
    found = await store.find("alice", "notes", "state", "s1", now=NOW)
    assert found is not None
    assert found.origin == "d2"


async def test_the_memory_store_keeps_no_value_and_forgets_the_oldest() -> None:
    store = MemoryContinuationStore(max_entries=2)
    for value in ("secret-state-1", "secret-state-2", "secret-state-3"):
        await store.remember("alice", "notes", "state", value, _continuation())
    assert len(store) == 2
    assert await store.find("alice", "notes", "state", "secret-state-1", now=NOW) is None
    assert await store.find("alice", "notes", "state", "secret-state-3", now=NOW) == _continuation()
    assert all(b"secret" not in key for key in store._entries)
    with pytest.raises(ValueError, match="max_entries"):
        MemoryContinuationStore(max_entries=0)


async def test_two_replicas_see_each_others_continuations(prefix: str) -> None:
    async with (
        RedisContinuationStore(REDIS_URL, prefix=prefix) as one,
        RedisContinuationStore(REDIS_URL, prefix=prefix) as two,
    ):
        await one.remember("alice", "notes", "task", "t1", _continuation("d1"))
        assert await two.find("alice", "notes", "task", "t1", now=NOW) == _continuation("d1")
        await two.remember("alice", "notes", "task", "t1", _continuation("d2"))
        found = await one.find("alice", "notes", "task", "t1", now=NOW)
        assert found is not None
        assert found.origin == "d2"
        assert await two.find("bob", "notes", "task", "t1", now=NOW) is None


async def test_the_redis_store_keeps_no_value_and_lets_redis_expire_it(prefix: str) -> None:
    async with RedisContinuationStore(REDIS_URL, prefix=prefix) as store:
        await store.remember("alice", "notes", "state", "secret-state-1", _continuation(expires=time.time() + 30))
        await store.remember("alice", "notes", "state", "secret-state-2", _continuation(expires=time.time() - 120))
    async with Redis.from_url(REDIS_URL) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        assert len(keys) == 1  # the one long past its expiry is not kept
        assert keys[0] == f"{prefix}{continuation_key('alice', 'notes', 'state', 'secret-state-1').hex()}".encode()
        assert b"secret" not in await client.get(keys[0])
        assert 60_000 < await client.pttl(keys[0]) <= 90_000  # expires, plus the minute's grace


async def test_an_unreachable_redis_raises_rather_than_finds_nothing() -> None:
    store = RedisContinuationStore("redis://127.0.0.1:1/0")
    with pytest.raises((OSError, RedisError)):
        await store.find("alice", "notes", "state", "s1", now=NOW)
    await store.close()

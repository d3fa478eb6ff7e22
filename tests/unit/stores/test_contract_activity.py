"""The contract of ``ActivityStore`` (``bastion.stores.activity``): every backend runs these tests.

Backends: the embedded ``MemoryActivityStore`` and the shared ``RedisActivityStore`` (on the Redis on
loopback, under a key prefix of the test's own, deleted after). The tests at the end open two handles
on the shared backend, as two replicas.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from stores_support import REDIS_URL, started

from bastion.stores.activity import ActivityStore, CapRefusal, Caps
from bastion.stores.memory_activity import MemoryActivityStore
from bastion.stores.redis_activity import RedisActivityStore

NOW = 1_700_000_000.0
IDLE = 60.0

#: Every backend of ``ActivityStore``: a factory of an empty store (the argument is the test's own
#: Redis key prefix).
BACKENDS: dict[str, Callable[[str], ActivityStore]] = {
    "memory": lambda _prefix: MemoryActivityStore(),
    "redis": lambda prefix: RedisActivityStore(REDIS_URL, prefix=prefix),
}

SELF_EXPIRING = ("redis",)
"""Backends whose server expires idle keys itself: their ``sweep`` has nothing to do and returns 0."""


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[ActivityStore]:
    """Each backend of ``ActivityStore``, empty and started."""
    async with started(BACKENDS[request.param](prefix)) as store:
        yield store


async def admit(store: ActivityStore, caps: Caps, tool: str | None = "t", *, destructive: bool = False,
                key: str = "k", now: float = NOW) -> CapRefusal | None:  # fmt: skip
    return await store.admit(key, caps, tool=tool, destructive=destructive, now=now, idle_s=IDLE)


async def test_a_call_cap_of_n_admits_exactly_n_of_many_simultaneous_calls(store: ActivityStore) -> None:
    answers = await asyncio.gather(*(admit(store, Caps(calls=7)) for _ in range(40)))
    assert sum(answer is None for answer in answers) == 7
    refused = [answer for answer in answers if answer is not None]
    assert {(r.cap, r.limit, r.used) for r in refused} == {("calls", 7, 7)}


async def test_each_cap_counts_what_it_names(store: ActivityStore) -> None:
    caps = Caps(destructive_calls=1, distinct_tools=2)
    assert await admit(store, caps, "drop", destructive=True) is None
    assert await admit(store, caps, "drop", destructive=True) == CapRefusal("destructive_calls", 1, 1)
    assert await admit(store, caps, "read") is None  # a second tool
    assert await admit(store, caps, "read") is None  # a tool already called stays callable
    assert await admit(store, caps, "third") == CapRefusal("distinct_tools", 2, 2)
    assert await admit(store, caps, None) is None  # a resource or prompt is no tool
    assert await admit(store, Caps(calls=4), "read") == CapRefusal("calls", 4, 4)  # refusals were not counted


async def test_a_destructive_cap_of_zero_refuses_every_destructive_call(store: ActivityStore) -> None:
    assert await admit(store, Caps(destructive_calls=0), "drop", destructive=True) == CapRefusal(
        "destructive_calls", 0, 0
    )
    assert await admit(store, Caps(destructive_calls=0), "read") is None


async def test_bytes_returned_refuse_the_next_call_once_at_the_cap(store: ActivityStore) -> None:
    caps = Caps(result_bytes=100)
    assert await admit(store, caps) is None
    await store.add_bytes("k", 60, now=NOW, idle_s=IDLE)
    assert await admit(store, caps) is None
    await store.add_bytes("k", 60, now=NOW, idle_s=IDLE)
    assert await admit(store, caps) == CapRefusal("result_bytes", 100, 120)
    await store.add_bytes("unknown", 500, now=NOW, idle_s=IDLE)  # never admitted: left alone
    assert await admit(store, caps, key="unknown") is None


async def test_labels_accumulate_and_keys_are_separate(store: ActivityStore) -> None:
    assert await store.labels("a", now=NOW) == frozenset()
    await store.mark("a", ["private_data"], now=NOW, idle_s=IDLE)
    await store.mark("a", ["untrusted_content", "private_data"], now=NOW + 1, idle_s=IDLE)
    await store.mark("b", [], now=NOW, idle_s=IDLE)  # no labels: nothing created
    assert await store.labels("a", now=NOW + 2) == {"private_data", "untrusted_content"}
    assert await store.labels("b", now=NOW + 2) == frozenset()


async def test_a_key_is_forgotten_once_idle_and_each_write_keeps_it_alive(store: ActivityStore) -> None:
    await store.mark("a", ["x"], now=NOW, idle_s=IDLE)
    await store.mark("a", [], now=NOW + 50, idle_s=IDLE)  # a call without labels keeps the key alive
    assert await store.labels("a", now=NOW + 100) == {"x"}
    assert await store.labels("a", now=NOW + 110) == frozenset()  # 60 s after the last write
    assert await admit(store, Caps(calls=1), now=NOW) is None
    assert await admit(store, Caps(calls=1), now=NOW + 59) is not None
    assert await admit(store, Caps(calls=1), now=NOW + 59 + IDLE) is None  # idle long enough: a fresh count


async def test_sweep_forgets_idle_keys_only(store: ActivityStore) -> None:
    await store.mark("old", ["x"], now=NOW, idle_s=IDLE)
    await store.mark("new", ["y"], now=NOW + 30, idle_s=IDLE)
    swept = await store.sweep(NOW + IDLE)
    assert swept == (0 if isinstance(store, RedisActivityStore) else 1)
    assert await store.labels("old", now=NOW + IDLE) == frozenset()
    assert await store.labels("new", now=NOW + IDLE) == {"y"}


async def test_a_full_memory_store_refuses_new_keys_rather_than_drop_live_ones() -> None:
    store = MemoryActivityStore(max_keys=2)
    await store.mark("a", ["x"], now=NOW, idle_s=IDLE)
    await store.mark("b", ["x"], now=NOW, idle_s=IDLE)
    with pytest.raises(RuntimeError):
        await store.mark("c", ["x"], now=NOW, idle_s=IDLE)
    assert await store.labels("a", now=NOW) == {"x"}
    await store.mark("c", ["x"], now=NOW + IDLE, idle_s=IDLE)  # the idle ones are swept to make room
    assert await store.labels("c", now=NOW + IDLE) == {"x"}


async def test_two_replicas_count_one_cap_of_n_as_at_most_n_calls(prefix: str) -> None:
    async with (
        RedisActivityStore(REDIS_URL, prefix=prefix) as one,
        RedisActivityStore(REDIS_URL, prefix=prefix) as two,
    ):
        answers = await asyncio.gather(*(admit(store, Caps(calls=9)) for _ in range(30) for store in (one, two)))
        assert sum(answer is None for answer in answers) == 9
        await one.mark("a", ["private_data"], now=NOW, idle_s=IDLE)
        await two.mark("a", ["untrusted_content"], now=NOW + 1, idle_s=IDLE)
        assert (
            await one.labels("a", now=NOW + 2)
            == await two.labels("a", now=NOW + 2)
            == {"private_data", "untrusted_content"}
        )
        assert await admit(one, Caps(result_bytes=10)) is None
        await two.add_bytes("k", 10, now=NOW, idle_s=IDLE)
        assert await admit(one, Caps(result_bytes=10)) == CapRefusal("result_bytes", 10, 10)


async def test_the_redis_store_keeps_digests_and_lets_redis_expire_them(prefix: str) -> None:
    async with RedisActivityStore(REDIS_URL, prefix=prefix) as store:
        await store.mark("session:secret-session-id", ["x"], now=time.time(), idle_s=IDLE)
    async with Redis.from_url(REDIS_URL) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        assert len(keys) == 1
        assert b"secret" not in keys[0]
        assert 60_000 < await client.pttl(keys[0]) <= 120_000  # idle_s, plus the minute's grace


async def test_an_unreachable_redis_raises_rather_than_admits() -> None:
    store = RedisActivityStore("redis://127.0.0.1:1/0")
    with pytest.raises((OSError, RedisError)):
        await admit(store, Caps(calls=1))
    await store.close()

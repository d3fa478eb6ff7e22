"""The ``RateCounter`` contract, run against every backend (``MemoryRateCounter``,
``SQLiteRateCounter``, ``RedisRateCounter``).

``handles`` opens counters on ONE backend (for SQLite: one file; for Redis: one key prefix of
the test's own on the Redis at ``REDIS_URL``, its keys deleted afterwards), as replicas would.
The replica tests (two handles racing, a restart) use ``replica_handles``, which holds only the
backends whose handles share their counts: the memory counter is per process by design. A
backend joins by adding an entry to ``BACKENDS`` (and, if shared, its name to ``SHARED``);
every test here must pass unchanged against it.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from stores_support import REDIS_URL, delete_redis_keys

from bastion.stores.counters import RateCounter, RateDecision
from bastion.stores.memory_counters import MemoryRateCounter
from bastion.stores.redis_counters import RedisRateCounter
from bastion.stores.sqlite_counters import SQLiteRateCounter

NOW = 1_700_000_000.0
#: The Redis every machine and CI runs (it keeps nothing on disk).

Opener = Callable[[], Awaitable[RateCounter]]

#: Every backend of ``RateCounter``, by name: a factory of a counter (to open with ``async with``)
#: on the backend at the test's directory and Redis key prefix.
BACKENDS: dict[str, Callable[[Path, str], AbstractAsyncContextManager[RateCounter]]] = {
    "memory": lambda tmp, prefix: nullcontext(MemoryRateCounter()),
    "sqlite": lambda tmp, prefix: SQLiteRateCounter(tmp / "bastion.db"),
    "redis": lambda tmp, prefix: RedisRateCounter(REDIS_URL, prefix=prefix),
}
#: The backends whose handles (replicas, a restarted process) share one count.
SHARED = ("redis", "sqlite")


def openers_fixture(names: tuple[str, ...]) -> Any:
    """A fixture, parametrised by ``names`` (of ``BACKENDS``), whose value opens started counters
    on one fresh backend: call it once per replica. Every counter it opened is closed after the
    test, and the test's Redis keys are deleted."""

    @pytest.fixture(params=sorted(names))
    async def handles(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
        prefix = f"bastion-test:{uuid.uuid4().hex}:"
        async with AsyncExitStack() as stack:
            if request.param == "redis":
                stack.push_async_callback(delete_redis_keys, prefix)  # last: after the counters closed

            async def open_counter() -> RateCounter:
                return await stack.enter_async_context(BACKENDS[request.param](tmp_path, prefix))

            yield open_counter

    return handles


handles = openers_fixture(tuple(BACKENDS))
replica_handles = openers_fixture(SHARED)


@pytest.fixture
async def counter(handles: Opener) -> RateCounter:
    """Each backend of ``RateCounter``, empty."""
    return await handles()


async def test_hits_up_to_the_limit_are_allowed_and_the_next_is_refused(counter: RateCounter) -> None:
    answers = [await counter.hit("k", 3, 60, now=NOW + i) for i in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.remaining for a in answers] == [2, 1, 0, 0]
    assert answers[0].retry_after_s == 0.0
    assert answers[3].retry_after_s == pytest.approx(57)  # until the hit at NOW is 60 s old


async def test_a_refused_hit_is_not_counted(counter: RateCounter) -> None:
    for i in range(2):
        await counter.hit("k", 2, 60, now=NOW + i)
    for t in range(10, 50, 10):  # knocking on while refused does not push the window
        assert not (await counter.hit("k", 2, 60, now=NOW + t)).allowed
    assert await counter.hit("k", 2, 60, now=NOW + 60) == RateDecision(True, 0, pytest.approx(1))


async def test_the_window_slides(counter: RateCounter) -> None:
    for t in (0, 30):
        await counter.hit("k", 2, 60, now=NOW + t)
    assert not (await counter.hit("k", 2, 60, now=NOW + 59.5)).allowed
    assert (await counter.hit("k", 2, 60, now=NOW + 60)).allowed  # the hit at 0 has left
    assert not (await counter.hit("k", 2, 60, now=NOW + 89)).allowed  # 30 and 60 are in
    assert (await counter.hit("k", 2, 60, now=NOW + 90)).allowed


async def test_keys_are_counted_apart(counter: RateCounter) -> None:
    await counter.hit("sign-in:alice", 1, 60, now=NOW)
    assert not (await counter.hit("sign-in:alice", 1, 60, now=NOW)).allowed
    assert (await counter.hit("sign-in:bob", 1, 60, now=NOW)).allowed
    assert (await counter.hit("limit:alice", 1, 60, now=NOW)).allowed
    assert (await counter.hit("sign-in:alice ", 1, 60, now=NOW)).allowed


async def test_peek_answers_like_hit_without_counting(counter: RateCounter) -> None:
    assert await counter.peek("k", 2, 60, now=NOW) == RateDecision(True, 2, 0.0)
    await counter.hit("k", 2, 60, now=NOW)
    for _ in range(5):
        assert await counter.peek("k", 2, 60, now=NOW + 1) == RateDecision(True, 1, 0.0)
    await counter.hit("k", 2, 60, now=NOW + 1)
    assert await counter.peek("k", 2, 60, now=NOW + 2) == RateDecision(False, 0, pytest.approx(58))


async def test_reset_forgets_a_key_and_is_idempotent(counter: RateCounter) -> None:
    await counter.hit("k", 1, 60, now=NOW)
    await counter.reset("k")
    await counter.reset("k")
    await counter.reset("never-hit")
    assert (await counter.hit("k", 1, 60, now=NOW)).allowed


@pytest.mark.parametrize(("limit", "window_s"), [(0, 60), (-1, 60), (1, 0), (1, -5)])
async def test_a_meaningless_rate_is_refused(counter: RateCounter, limit: int, window_s: float) -> None:
    with pytest.raises(ValueError, match="limit"):
        await counter.hit("k", limit, window_s, now=NOW)
    with pytest.raises(ValueError, match="limit"):
        await counter.peek("k", limit, window_s, now=NOW)


async def test_concurrent_hits_on_one_key_allow_exactly_the_limit(counter: RateCounter) -> None:
    answers = await asyncio.gather(*(counter.hit("k", 7, 60, now=NOW) for _ in range(50)))
    assert sum(a.allowed for a in answers) == 7
    assert sorted(a.remaining for a in answers if a.allowed) == list(range(7))


async def test_the_memory_counter_tracks_at_most_max_keys_the_least_recently_hit_forgotten_first() -> None:
    counter = MemoryRateCounter(max_keys=2)
    for key in ("a", "b"):
        await counter.hit(key, 1, 60, now=NOW)
    await counter.hit("a", 1, 60, now=NOW + 1)  # refused, but "a" is now the most recently hit
    await counter.hit("c", 1, 60, now=NOW + 2)
    assert (await counter.peek("b", 1, 60, now=NOW + 3)).allowed  # forgotten
    assert not (await counter.peek("a", 1, 60, now=NOW + 3)).allowed
    assert not (await counter.peek("c", 1, 60, now=NOW + 3)).allowed
    with pytest.raises(ValueError, match="max_keys"):
        MemoryRateCounter(max_keys=0)


async def test_answers_match_the_memory_counter_to_the_last_bit(counter: RateCounter) -> None:
    windows = {"a": 0.3, "b": 1.7, "c": 60.0}  # one window per key: its rule's
    reference, rng = MemoryRateCounter(), random.Random(14)
    now, times = NOW + 0.123456789, [NOW]
    for step in range(300):
        key, limit = rng.choice(list(windows)), rng.choice([1, 2, 3])  # a key's rule may change its limit
        window_s = windows[key]
        boundary = rng.choice(times[-3:]) + window_s  # when a recent hit leaves the window, to the bit
        now = max(now, boundary) if rng.random() < 0.4 else now + rng.choice([0.0, 0.1, rng.uniform(0, 2)])
        times.append(now)
        operation = "reset" if step % 97 == 96 else rng.choice(["hit", "hit", "peek"])
        if operation == "reset":
            await counter.reset(key)
            await reference.reset(key)
            continue
        got = await getattr(counter, operation)(key, limit, window_s, now=now)
        assert got == await getattr(reference, operation)(key, limit, window_s, now=now), (step, operation, now)


# --- replicas: handles on one shared backend --------------------------------------------------


async def test_a_restarted_handle_sees_the_hits_of_the_one_before(replica_handles: Opener) -> None:
    first = await replica_handles()
    for i in range(3):
        await first.hit("quota:alice", 3, 86_400, now=NOW + i)
    assert isinstance(first, SQLiteRateCounter | RedisRateCounter)
    await first.close()
    restarted = await replica_handles()
    assert await restarted.peek("quota:alice", 3, 86_400, now=NOW + 10) == RateDecision(False, 0, 86_390)
    assert not (await restarted.hit("quota:alice", 3, 86_400, now=NOW + 10)).allowed
    assert (await restarted.hit("quota:bob", 3, 86_400, now=NOW + 10)).allowed
    assert await restarted.hit("quota:alice", 3, 86_400, now=NOW + 86_400) == RateDecision(True, 0, 1)


async def test_replicas_racing_on_one_key_admit_exactly_the_limit(replica_handles: Opener) -> None:
    store, replica = await replica_handles(), await replica_handles()
    answers = await asyncio.gather(*((store, replica)[i % 2].hit("k", 10, 60, now=NOW) for i in range(50)))
    assert sum(a.allowed for a in answers) == 10
    assert sorted(a.remaining for a in answers if a.allowed) == list(range(10))
    assert (
        await store.peek("k", 10, 60, now=NOW) == await replica.peek("k", 10, 60, now=NOW) == RateDecision(False, 0, 60)
    )


# --- what only one backend has ----------------------------------------------------------------


async def test_purge_deletes_old_hits_of_every_key(tmp_path: Path) -> None:
    async with SQLiteRateCounter(tmp_path / "bastion.db") as counter:
        for _ in range(3):  # the third is refused and leaves no row
            await counter.hit("a", 2, 60, now=NOW)
        await counter.hit("b", 1, 60, now=NOW + 100)
        assert await counter.purge(NOW + 50) == 2
        assert await counter.purge(NOW + 50) == 0
        assert (await counter.peek("a", 2, 60, now=NOW + 1)).remaining == 2
        assert not (await counter.peek("b", 1, 60, now=NOW + 101)).allowed


async def test_the_redis_counter_keeps_a_key_with_its_prefix_for_a_window_after_its_last_hit() -> None:
    prefix = f"bastion-test:{uuid.uuid4().hex}:"
    try:
        async with RedisRateCounter(REDIS_URL, prefix=prefix) as counter, Redis.from_url(REDIS_URL) as redis:
            await counter.peek("sign-in:alice", 3, 60, now=NOW)
            assert not await redis.exists(f"{prefix}sign-in:alice")  # peek writes nothing
            await counter.hit("sign-in:alice", 3, 60, now=NOW)
            assert await redis.zcard(f"{prefix}sign-in:alice") == 1
            assert 59_000 < await redis.pttl(f"{prefix}sign-in:alice") <= 60_000
            await counter.reset("sign-in:alice")
            assert not await redis.exists(f"{prefix}sign-in:alice")
    finally:
        await delete_redis_keys(prefix)


async def test_the_redis_counter_raises_redis_errors() -> None:
    prefix = f"bastion-test:{uuid.uuid4().hex}:"
    try:
        async with RedisRateCounter(REDIS_URL, prefix=prefix) as counter, Redis.from_url(REDIS_URL) as redis:
            await redis.set(f"{prefix}k", "not a sorted set")
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await counter.hit("k", 1, 60, now=NOW)
    finally:
        await delete_redis_keys(prefix)


async def test_the_redis_counter_says_which_redis_does_not_answer_without_its_password() -> None:
    counter = RedisRateCounter("redis://:hunter2@127.0.0.1:1/0")
    with pytest.raises(RedisConnectionError, match=r"Redis at redis://127\.0\.0\.1:1/0 does not answer") as raised:
        await counter.start()
    assert "hunter2" not in str(raised.value)
    with pytest.raises(RuntimeError, match="not open"):
        await counter.hit("k", 1, 60, now=NOW)

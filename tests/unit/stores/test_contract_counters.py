"""The ``RateCounter`` contract, run against every backend (today ``MemoryRateCounter``).

A shared backend joins by adding a parameter to the ``counter`` fixture; every test here
must pass unchanged against it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bastion.stores.counters import RateCounter, RateDecision
from bastion.stores.memory_counters import MemoryRateCounter

NOW = 1_700_000_000.0


#: Every backend of ``RateCounter``, by name: a factory of an empty counter.
BACKENDS: dict[str, Callable[[], RateCounter]] = {"memory": MemoryRateCounter}


@pytest.fixture(params=sorted(BACKENDS))
def counter(request: pytest.FixtureRequest) -> RateCounter:
    """Each backend of ``RateCounter``, empty."""
    return BACKENDS[request.param]()


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

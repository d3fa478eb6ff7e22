"""``MemorySessionStore`` beyond the contract: the number of sessions is bounded, idle ones go first.

What every ``SessionStore`` does is in ``test_contract_sessions.py``.
"""

from __future__ import annotations

from tests.support.clock import FakeClock

from bastion.stores.memory_sessions import MemorySessionStore

ALICE = "https://issuer.test\x1falice"


async def test_the_number_of_sessions_is_bounded() -> None:
    store = MemorySessionStore(idle_s=3600, max_sessions=10)
    created = [await store.create("notes", ALICE) for _ in range(100)]
    alive = [s for s in created if await store.get(s.id, "notes", ALICE) is not None]
    assert 1 <= len(alive) <= 10
    assert created[-1] in alive


async def test_eviction_drops_expired_sessions_before_live_ones() -> None:
    clock = FakeClock(1_700_000_000.0)
    store = MemorySessionStore(idle_s=60, max_sessions=10, clock=clock)
    stale = [await store.create("notes", ALICE) for _ in range(3)]
    clock.now += 120
    live = [await store.create("notes", ALICE) for _ in range(7)]
    newest = await store.create("notes", ALICE)
    for session in live:
        assert await store.get(session.id, "notes", ALICE) is not None
    assert await store.get(newest.id, "notes", ALICE) is not None
    assert [await store.get(s.id, "notes", ALICE) for s in stale] == [None] * 3


async def test_eviction_of_live_sessions_drops_the_least_recently_used() -> None:
    clock = FakeClock(1_700_000_000.0)
    forgotten: list[str] = []
    store = MemorySessionStore(idle_s=3600, max_sessions=10, on_forget=lambda s: forgotten.append(s.id), clock=clock)
    sessions = []
    for _ in range(10):  # sessions[0] is the least recently used
        sessions.append(await store.create("notes", ALICE))
        clock.now += 1
    await store.get(sessions[0].id, "notes", ALICE)  # ...until it is used again
    await store.create("notes", ALICE)
    assert await store.get(sessions[0].id, "notes", ALICE) is not None
    assert await store.get(sessions[1].id, "notes", ALICE) is None
    assert forgotten == [sessions[1].id]  # evicted sessions are reported like expired ones

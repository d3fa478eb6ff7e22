"""Tests of ``bastion.stores.sessions.MemorySessionStore``: binding to principal and route, expiry, eviction."""

from __future__ import annotations

import pytest

from bastion.stores.sessions import MemorySessionStore, Session

ALICE = "https://issuer.test\x1falice"
BOB = "https://issuer.test\x1fbob"


@pytest.fixture
def store() -> MemorySessionStore:
    return MemorySessionStore(idle_s=60)


def _age(session: Session, seconds: float) -> None:
    """Pretend ``session`` was last seen ``seconds`` ago (no clock patching)."""
    session.last_seen -= seconds


async def test_create_then_get_returns_the_same_session(store: MemorySessionStore) -> None:
    session = await store.create("notes", ALICE)
    assert (session.route, session.principal_key) == ("notes", ALICE)
    assert session.upstream_id is None
    assert session.protocol_version is None
    assert await store.get(session.id, "notes", ALICE) is session


async def test_ids_are_long_random_and_url_safe(store: MemorySessionStore) -> None:
    ids = {(await store.create("notes", ALICE)).id for _ in range(200)}
    assert len(ids) == 200
    for sid in ids:
        assert len(sid) >= 43
        assert all(c.isalnum() or c in "-_" for c in sid)


async def test_another_principal_gets_none(store: MemorySessionStore) -> None:
    session = await store.create("notes", ALICE)
    assert await store.get(session.id, "notes", BOB) is None
    assert await store.get(session.id, "notes", ALICE[:-1]) is None
    assert await store.get(session.id, "notes", "") is None
    assert await store.get(session.id, "notes", ALICE) is session  # still there for its owner


async def test_another_route_gets_none(store: MemorySessionStore) -> None:
    session = await store.create("notes", ALICE)
    assert await store.get(session.id, "time", ALICE) is None
    assert await store.get(session.id, "notes", ALICE) is session


async def test_unknown_ids_get_none(store: MemorySessionStore) -> None:
    await store.create("notes", ALICE)
    for sid in ("", "x", "\x00", "a" * 10_000):
        assert await store.get(sid, "notes", ALICE) is None


async def test_delete_forgets_and_is_idempotent(store: MemorySessionStore) -> None:
    session = await store.create("notes", ALICE)
    await store.delete(session.id)
    assert await store.get(session.id, "notes", ALICE) is None
    await store.delete(session.id)
    await store.delete("never-existed")


async def test_an_idle_session_expires(store: MemorySessionStore) -> None:
    session = await store.create("notes", ALICE)
    _age(session, 61)
    assert await store.get(session.id, "notes", ALICE) is None
    _age(session, -61)  # even if the clock came back, it is gone for good
    assert await store.get(session.id, "notes", ALICE) is None


async def test_an_expired_session_is_gone_for_its_owner_after_a_foreign_lookup(store: MemorySessionStore) -> None:
    session = await store.create("notes", ALICE)
    _age(session, 61)
    assert await store.get(session.id, "notes", BOB) is None
    _age(session, -61)
    assert await store.get(session.id, "notes", ALICE) is None


async def test_use_refreshes_the_idle_timer(store: MemorySessionStore) -> None:
    session = await store.create("notes", ALICE)
    _age(session, 50)
    assert await store.get(session.id, "notes", ALICE) is session
    _age(session, 50)  # 100 s since creation, 50 s since last use
    assert await store.get(session.id, "notes", ALICE) is session


async def test_a_foreign_lookup_does_not_refresh_the_idle_timer(store: MemorySessionStore) -> None:
    session = await store.create("notes", ALICE)
    _age(session, 50)
    await store.get(session.id, "notes", BOB)
    await store.get(session.id, "time", ALICE)
    _age(session, 11)
    assert await store.get(session.id, "notes", ALICE) is None


async def test_the_number_of_sessions_is_bounded() -> None:
    store = MemorySessionStore(idle_s=3600, max_sessions=10)
    created = [await store.create("notes", ALICE) for _ in range(100)]
    alive = [s for s in created if await store.get(s.id, "notes", ALICE) is s]
    assert 1 <= len(alive) <= 10
    assert created[-1] in alive


async def test_eviction_drops_expired_sessions_before_live_ones() -> None:
    store = MemorySessionStore(idle_s=60, max_sessions=10)
    sessions = [await store.create("notes", ALICE) for _ in range(10)]
    for stale in sessions[:3]:
        _age(stale, 120)
    newest = await store.create("notes", ALICE)
    for live in sessions[3:]:
        assert await store.get(live.id, "notes", ALICE) is live
    assert await store.get(newest.id, "notes", ALICE) is newest


async def test_eviction_of_live_sessions_drops_the_least_recently_used() -> None:
    store = MemorySessionStore(idle_s=3600, max_sessions=10)
    sessions = [await store.create("notes", ALICE) for _ in range(10)]
    for i, session in enumerate(sessions):
        _age(session, 100 - i)  # sessions[0] is the least recently used
    await store.get(sessions[0].id, "notes", ALICE)  # ...until it is used again
    await store.create("notes", ALICE)
    assert await store.get(sessions[0].id, "notes", ALICE) is sessions[0]
    assert await store.get(sessions[1].id, "notes", ALICE) is None


async def test_sessions_the_store_drops_by_itself_are_reported_and_deleted_ones_are_not() -> None:
    forgotten: list[str] = []
    store = MemorySessionStore(idle_s=10, max_sessions=100, on_forget=lambda s: forgotten.append(s.id))
    idle = await store.create("notes", "alice")
    fresh = await store.create("notes", "alice")
    gone = await store.create("notes", "alice")
    await store.delete(gone.id)
    fresh.last_seen = idle.last_seen + 20
    assert store.sweep(now=idle.last_seen + 25) == 1
    assert forgotten == [idle.id]
    assert await store.get(fresh.id, "notes", "alice") is fresh
    assert [s.id for s in store.drain()] == [fresh.id]
    assert forgotten == [idle.id]  # drain hands sessions back instead of reporting them

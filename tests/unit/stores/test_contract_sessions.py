"""The ``SessionStore`` contract, run against every backend: ``MemorySessionStore`` and
``RedisSessionStore`` (on the Redis on loopback, under a key prefix of the test's own, deleted after).

Each backend is built with idle expiry after 60 s, an injected wall clock and an
``on_forget`` that records what the store dropped by itself. A shared backend joins by
adding an entry to ``BACKENDS``; every test here must pass unchanged against it. The tests at
the end open two handles on one shared backend, as two replicas.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from stores_support import REDIS_URL, started
from tests.support.clock import FakeClock

from bastion.stores.memory_sessions import MemorySessionStore
from bastion.stores.redis_sessions import RedisSessionStore
from bastion.stores.sessions import SentRequest, Session, SessionStore

ALICE = "https://issuer.test\x1falice"
BOB = "https://issuer.test\x1fbob"
IDLE_S = 60.0
EPOCH = 1_700_000_000.0
"""Where the suite's clock starts (wall-clock epoch seconds, moved by hand)."""


@dataclass
class Backend:
    store: SessionStore
    clock: FakeClock
    forgotten: list[str] = field(default_factory=list)
    shared: bool = False  # replicas share it: drain leaves its sessions to the others


Factory = Callable[[FakeClock, Callable[[Session], None], str], SessionStore]

#: Every backend of ``SessionStore``: a factory of an empty store with ``idle_s`` = 60 (the last
#: argument is the test's own Redis key prefix).
BACKENDS: dict[str, Factory] = {
    "memory": lambda clock, on_forget, _prefix: MemorySessionStore(idle_s=IDLE_S, on_forget=on_forget, clock=clock),
    "redis": lambda clock, on_forget, prefix: RedisSessionStore(
        REDIS_URL, prefix=prefix, idle_s=IDLE_S, on_forget=on_forget, clock=clock
    ),
}


SHARED = ("redis",)


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Backend]:
    """Each backend, empty and started, with its clock and the ids of the sessions it dropped by itself."""
    clock, forgotten = FakeClock(EPOCH), []
    async with started(BACKENDS[request.param](clock, lambda s: forgotten.append(s.id), prefix)) as store:
        yield Backend(store, clock, forgotten, shared=request.param in SHARED)


@pytest.fixture
def store(backend: Backend) -> SessionStore:
    return backend.store


# --- binding ------------------------------------------------------------------------------


async def test_create_then_get_returns_the_session(backend: Backend) -> None:
    session = await backend.store.create("notes", ALICE)
    assert (session.route, session.principal_key) == ("notes", ALICE)
    assert session.upstream_id is None
    assert session.protocol_version is None
    assert session.created == session.last_seen == backend.clock.now  # wall-clock epoch seconds
    found = await backend.store.get(session.id, "notes", ALICE)
    assert found == session


async def test_ids_are_long_random_and_url_safe(store: SessionStore) -> None:
    ids = {(await store.create("notes", ALICE)).id for _ in range(200)}
    assert len(ids) == 200
    for sid in ids:
        assert len(sid) >= 43
        assert all(c.isalnum() or c in "-_" for c in sid)


async def test_another_principal_gets_none(store: SessionStore) -> None:
    session = await store.create("notes", ALICE)
    assert await store.get(session.id, "notes", BOB) is None
    assert await store.get(session.id, "notes", ALICE[:-1]) is None
    assert await store.get(session.id, "notes", "") is None
    assert await store.get(session.id, "notes", ALICE) == session  # still there for its owner


async def test_another_route_gets_none(store: SessionStore) -> None:
    session = await store.create("notes", ALICE)
    assert await store.get(session.id, "time", ALICE) is None
    assert await store.get(session.id, "notes", ALICE) == session


async def test_unknown_ids_get_none(store: SessionStore) -> None:
    await store.create("notes", ALICE)
    for sid in ("", "x", "\x00", "a" * 10_000):
        assert await store.get(sid, "notes", ALICE) is None


async def test_delete_forgets_and_is_idempotent(backend: Backend) -> None:
    store = backend.store
    session = await store.create("notes", ALICE)
    await store.delete(session.id)
    assert await store.get(session.id, "notes", ALICE) is None
    await store.delete(session.id)
    await store.delete("never-existed")
    assert backend.forgotten == []  # the caller of delete ends the upstream session itself


# --- idle expiry (injected clock) ---------------------------------------------------------------


async def test_an_idle_session_expires(backend: Backend) -> None:
    session = await backend.store.create("notes", ALICE)
    backend.clock.advance(IDLE_S + 1)
    assert await backend.store.get(session.id, "notes", ALICE) is None
    backend.clock.advance(-(IDLE_S + 1))  # even if the clock came back, it is gone for good
    assert await backend.store.get(session.id, "notes", ALICE) is None


async def test_an_expired_session_is_gone_for_its_owner_after_a_foreign_lookup(backend: Backend) -> None:
    session = await backend.store.create("notes", ALICE)
    backend.clock.advance(IDLE_S + 1)
    assert await backend.store.get(session.id, "notes", BOB) is None
    backend.clock.advance(-(IDLE_S + 1))
    assert await backend.store.get(session.id, "notes", ALICE) is None


async def test_use_refreshes_the_idle_timer(backend: Backend) -> None:
    session = await backend.store.create("notes", ALICE)
    backend.clock.advance(50)
    used = await backend.store.get(session.id, "notes", ALICE)
    assert used is not None
    assert used.last_seen == backend.clock.now
    backend.clock.advance(50)  # 100 s since creation, 50 s since last use
    assert await backend.store.get(session.id, "notes", ALICE) is not None


async def test_a_foreign_lookup_does_not_refresh_the_idle_timer(backend: Backend) -> None:
    session = await backend.store.create("notes", ALICE)
    backend.clock.advance(50)
    await backend.store.get(session.id, "notes", BOB)
    await backend.store.get(session.id, "time", ALICE)
    backend.clock.advance(11)
    assert await backend.store.get(session.id, "notes", ALICE) is None


async def test_sweep_drops_idle_sessions_and_reports_them(backend: Backend) -> None:
    store = backend.store
    idle = await store.create("notes", ALICE)
    backend.clock.advance(20)
    fresh = await store.create("notes", ALICE)
    gone = await store.create("notes", ALICE)
    await store.delete(gone.id)
    assert await store.sweep(backend.clock.now + IDLE_S - 10) == 1  # idle: 70 s; fresh: 50 s
    assert backend.forgotten == [idle.id]
    assert await store.sweep(backend.clock.now + IDLE_S - 10) == 0
    assert await store.get(fresh.id, "notes", ALICE) is not None
    backend.clock.advance(IDLE_S + 1)
    assert await store.sweep() == 1  # default: the store's clock
    assert backend.forgotten == [idle.id, fresh.id]


async def test_count_is_the_sessions_held_until_deleted_or_swept(backend: Backend) -> None:
    """``count`` (the ``bastion_sessions_open`` gauge) follows create, delete and sweep; an idle
    session counts until it is swept."""
    store: Any = backend.store
    assert await store.count() == 0
    first, second = await store.create("notes", ALICE), await store.create("files", BOB)
    assert await store.count() == 2
    await store.delete(second.id)
    assert await store.count() == 1
    backend.clock.advance(IDLE_S + 1)
    assert await store.count() == 1  # idle, not swept yet
    assert await store.sweep() == 1
    assert await store.count() == 0
    assert backend.forgotten == [first.id]


async def test_drain_hands_every_session_back_without_reporting_it(backend: Backend) -> None:
    """The embedded store hands every session back (this process ends them); a shared one none: the
    other replicas still serve them."""
    store = backend.store
    sessions = [await store.create("notes", ALICE), await store.create("time", BOB)]
    drained = await store.drain()
    assert sorted(s.id for s in drained) == ([] if backend.shared else sorted(s.id for s in sessions))
    assert backend.forgotten == []
    assert await store.drain() == []
    assert (await store.get(sessions[0].id, "notes", ALICE) is None) is not backend.shared


# --- update, and no mutation through returned values -------------------------------------------


async def test_update_sets_the_given_fields_and_returns_the_new_value(store: SessionStore) -> None:
    session = await store.create("notes", ALICE)
    updated = await store.update(session.id, upstream_id="up-1")
    assert updated is not None
    assert (updated.id, updated.upstream_id, updated.protocol_version) == (session.id, "up-1", None)
    updated = await store.update(session.id, protocol_version="2025-11-25")
    assert updated is not None
    assert (updated.upstream_id, updated.protocol_version) == ("up-1", "2025-11-25")
    found = await store.get(session.id, "notes", ALICE)
    assert found is not None
    assert (found.upstream_id, found.protocol_version) == ("up-1", "2025-11-25")


async def test_update_of_a_session_that_is_gone_is_none(store: SessionStore) -> None:
    session = await store.create("notes", ALICE)
    await store.delete(session.id)
    assert await store.update(session.id, upstream_id="up-1") is None
    assert await store.update("never-existed", upstream_id="up-1") is None
    assert await store.get(session.id, "notes", ALICE) is None


async def test_returned_sessions_cannot_be_changed_and_stay_as_returned(store: SessionStore) -> None:
    session = await store.create("notes", ALICE)
    for name, value in (("upstream_id", "forged"), ("principal_key", BOB), ("route", "time"), ("last_seen", 0.0)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(session, name, value)
    await store.update(session.id, upstream_id="up-1")
    assert session.upstream_id is None  # a snapshot: the update returned a new value
    assert await store.get(session.id, "time", ALICE) is None
    assert await store.get(session.id, "notes", BOB) is None


async def test_the_request_ledger_is_shared_by_every_value_of_one_session(store: SessionStore) -> None:
    session = await store.create("notes", ALICE)
    session.requests.remember(SentRequest(rpc_id=7, method="tools/list"))
    updated = await store.update(session.id, upstream_id="up-1")
    found = await store.get(session.id, "notes", ALICE)
    assert updated is not None
    assert found is not None
    for value in (updated, found):
        assert value.requests.find(7) == SentRequest(rpc_id=7, method="tools/list")
        assert value.requests.find("7") is None
    other = await store.create("notes", ALICE)
    assert other.requests.find(7) is None


async def test_a_shared_request_is_found_for_its_session_alone(backend: Backend) -> None:
    """``share`` records where other replicas look (a shared backend); the embedded one shares nothing."""
    session = await backend.store.create("notes", ALICE)
    request = SentRequest(rpc_id=7, method="tools/call", target="search", first_page=True)
    assert await session.requests.share(request) is backend.shared
    assert session.requests.shared is backend.shared
    assert await session.requests.find_shared(7) == (request if backend.shared else None)
    assert await session.requests.find_shared("7") is None  # 1 and "1" are two ids
    other = await backend.store.create("notes", ALICE)
    assert await other.requests.find_shared(7) is None  # another session of the same principal


# --- concurrency ------------------------------------------------------------------------------


async def test_concurrent_calls_keep_every_session_and_every_update(store: SessionStore) -> None:
    sessions = await asyncio.gather(*(store.create("notes", ALICE) for _ in range(100)))
    assert len({s.id for s in sessions}) == 100
    await asyncio.gather(
        *(store.update(s.id, upstream_id=f"up-{i}") for i, s in enumerate(sessions)),
        *(store.get(s.id, "notes", ALICE) for s in sessions),
    )
    found = await asyncio.gather(*(store.get(s.id, "notes", ALICE) for s in sessions))
    assert [f.upstream_id if f else None for f in found] == [f"up-{i}" for i in range(100)]


# --- replicas (shared backends) -----------------------------------------------------------------


@pytest.fixture
async def replicas(prefix: str) -> AsyncIterator[tuple[Backend, Backend]]:
    """Two handles on one Redis prefix with one clock, as two replicas; each records what it dropped."""
    clock = FakeClock(EPOCH)
    async with AsyncExitStack() as stack:
        backends = []
        for _ in range(2):
            forgotten: list[str] = []
            store = RedisSessionStore(
                REDIS_URL, prefix=prefix, idle_s=IDLE_S, on_forget=lambda s, f=forgotten: f.append(s.id), clock=clock
            )
            await stack.enter_async_context(store)
            backends.append(Backend(store, clock, forgotten))
        yield backends[0], backends[1]


async def test_a_session_opened_on_one_replica_continues_on_another(replicas: tuple[Backend, Backend]) -> None:
    one, other = replicas
    session = await one.store.create("notes", ALICE)
    await one.store.update(session.id, upstream_id="up-1", protocol_version="2025-11-25")
    found = await other.store.get(session.id, "notes", ALICE)
    assert found is not None
    assert (found.upstream_id, found.protocol_version, found.created) == ("up-1", "2025-11-25", session.created)
    assert await other.store.get(session.id, "notes", BOB) is None
    one.clock.advance(50)
    assert await other.store.get(session.id, "notes", ALICE) is not None  # use on one replica...
    one.clock.advance(50)
    assert await one.store.get(session.id, "notes", ALICE) is not None  # ...keeps it alive on the other
    await other.store.delete(session.id)
    assert await one.store.get(session.id, "notes", ALICE) is None


async def test_an_idle_session_is_reported_by_one_replica_only(replicas: tuple[Backend, Backend]) -> None:
    one, other = replicas
    sessions = [await one.store.create("notes", ALICE) for _ in range(20)]
    one.clock.advance(IDLE_S + 1)
    counts = await asyncio.gather(one.store.sweep(), other.store.sweep())
    assert sum(counts) == 20
    assert sorted(one.forgotten + other.forgotten) == sorted(s.id for s in sessions)
    assert await one.store.drain() == []  # shutting one replica down leaves the sessions to the others


async def test_a_request_ledger_stays_with_the_replica_it_was_sent_through(replicas: tuple[Backend, Backend]) -> None:
    one, other = replicas
    session = await one.store.create("notes", ALICE)
    session.requests.remember(SentRequest(rpc_id=7, method="tools/list"))
    there = await other.store.get(session.id, "notes", ALICE)
    assert there is not None
    assert there.requests.find(7) is None  # an answer replayed there for it is dropped, never relayed unfiltered
    here = await one.store.get(session.id, "notes", ALICE)
    assert here is not None
    assert here.requests.find(7) == SentRequest(rpc_id=7, method="tools/list")


async def test_a_shared_request_is_found_by_another_replica(replicas: tuple[Backend, Backend]) -> None:
    """A request whose answer is streamed is shared: the replica a cut stream resumes on finds it,
    as sent (method, target, first page), and keeps it; what was only remembered stays local."""
    one, other = replicas
    session = await one.store.create("notes", ALICE)
    streamed = SentRequest(rpc_id="call-1", method="tools/call", target="search", first_page=True)
    listed = SentRequest(rpc_id=8, method="tools/list", first_page=False)
    for request in (streamed, listed):
        session.requests.remember(request)
        assert await session.requests.share(request)
    session.requests.remember(SentRequest(rpc_id=9, method="tools/call", target="purge"))  # a JSON answer: not shared
    there = await other.store.get(session.id, "notes", ALICE)
    assert there is not None
    assert there.requests.find("call-1") is None  # nothing in that process yet...
    assert await there.requests.find_shared("call-1") == streamed  # ...but shared
    assert await there.requests.find_shared(8) == listed
    assert await there.requests.find_shared(9) is None
    assert there.requests.find("call-1") == streamed  # remembered there once found

"""The ``ContinuationStore`` contract, run against every backend (today ``MemoryContinuationStore``).

A shared backend joins by adding itself to ``BACKENDS``; every test here must pass unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bastion.stores.continuations import Continuation, ContinuationStore, continuation_key
from bastion.stores.memory_continuations import MemoryContinuationStore

NOW = 1_700_000_000.0

#: Every backend of ``ContinuationStore``, by name: a factory of an empty store.
BACKENDS: dict[str, Callable[[], ContinuationStore]] = {"memory": MemoryContinuationStore}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest) -> ContinuationStore:
    """Each backend of ``ContinuationStore``, empty."""
    return BACKENDS[request.param]()


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

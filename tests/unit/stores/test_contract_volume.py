"""The ``VolumeStore`` contract, run against every backend (``MemoryVolumeStore``, ``SQLiteVolumeStore``,
``PostgresVolumeStore`` on the PostgreSQL on loopback).

``BACKENDS`` opens a store on one backend (for SQLite: one file in the test's directory; for
PostgreSQL: one schema of the test's own, dropped afterwards); a "restart" opens a second store on
the same backend after the first was closed, and a second replica one beside it. A backend joins
by adding an entry to ``BACKENDS``; every test here must pass unchanged against it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from stores_support import CLEANUPS, POSTGRES_URL, postgres_schema

from bastion.stores.memory_volume import MemoryVolumeStore
from bastion.stores.postgres import PostgresDatabase
from bastion.stores.postgres_volume import PostgresVolumeStore
from bastion.stores.sqlite_volume import SQLiteVolumeStore
from bastion.stores.volume import VolumeStore

Opener = Callable[[], VolumeStore]


def _memory(tmp: Path) -> Opener:
    shared = MemoryVolumeStore()  # "restarting" reopens the same object, as a file would be
    return lambda: shared


def _sqlite(tmp: Path) -> Opener:
    return lambda: SQLiteVolumeStore(tmp / "bastion.db")


def _postgres(tmp: Path) -> Opener:
    return lambda: PostgresVolumeStore(PostgresDatabase(POSTGRES_URL, schema=postgres_schema(tmp)))


BACKENDS: dict[str, Callable[[Path], Opener]] = {"memory": _memory, "sqlite": _sqlite, "postgres": _postgres}
#: The backends whose stores (replicas, processes) share the saved baselines.
SHARED = ("sqlite", "postgres")


@pytest.fixture(params=sorted(BACKENDS))
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    yield BACKENDS[request.param](tmp_path)
    cleanup = CLEANUPS.get(request.param)
    if cleanup is not None:
        await cleanup(tmp_path)


@pytest.fixture(params=SHARED)
async def replica_opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    yield BACKENDS[request.param](tmp_path)
    cleanup = CLEANUPS.get(request.param)
    if cleanup is not None:
        await cleanup(tmp_path)


async def test_a_new_store_has_no_baselines(opener: Opener) -> None:
    async with opener() as store:
        assert await store.load() == {}
        await store.save({})  # nothing to save is fine
        assert await store.load() == {}


async def test_saved_samples_load_back_in_order_after_a_restart(opener: Opener) -> None:
    samples = [(2_000 + n, n % 7, 10) for n in range(200)]
    async with opener() as store:
        await store.save({("db", "rows"): samples, ("db", "status"): [(5, 1, 0)]})
    async with opener() as store:
        assert await store.load() == {("db", "rows"): tuple(samples), ("db", "status"): ((5, 1, 0),)}


async def test_saving_replaces_the_keys_given_and_keeps_the_others(opener: Opener) -> None:
    async with opener() as store:
        await store.save({("db", "rows"): [(1, 1, 1)], ("crm", "rows"): [(2, 2, 2)]})
        await store.save({("db", "rows"): [(3, 3, 3), (4, 4, 4)]})
        assert await store.load() == {("db", "rows"): ((3, 3, 3), (4, 4, 4)), ("crm", "rows"): ((2, 2, 2),)}


async def test_route_and_tool_names_are_kept_exactly(opener: Opener) -> None:
    odd = {("db", "a/b"): [(1, 0, 0)], ("db/a", "b"): [(2, 0, 0)], ("db", "naïve 'quoted' \"tool\""): [(3, 0, 0)]}
    async with opener() as store:
        await store.save(odd)
    async with opener() as store:
        assert await store.load() == {key: tuple(value) for key, value in odd.items()}


async def test_a_replica_starting_later_loads_what_another_saved(replica_opener: Opener) -> None:
    async with replica_opener() as first, replica_opener() as second:
        await first.save({("db", "rows"): [(1, 1, 1)]})
        assert await second.load() == {("db", "rows"): ((1, 1, 1),)}
        await second.save({("db", "rows"): [(2, 2, 2)], ("db", "status"): [(3, 0, 0)]})  # the last save wins
        assert await first.load() == {("db", "rows"): ((2, 2, 2),), ("db", "status"): ((3, 0, 0),)}


async def test_replicas_saving_the_same_keys_at_once_each_save_whole(replica_opener: Opener) -> None:
    keys = [("db", f"tool-{i}") for i in range(20)]
    async with replica_opener() as one, replica_opener() as two:
        await asyncio.gather(
            one.save({key: [(1, 1, 1)] for key in keys}), two.save({key: [(2, 2, 2)] for key in reversed(keys)})
        )
        loaded = await one.load()
    assert set(loaded) == set(keys)
    assert len(set(loaded.values())) == 1  # one replica's save whole, never a mix


async def test_an_unreadable_saved_baseline_is_left_out(replica_opener: Opener) -> None:
    async with replica_opener() as store:
        await store.save({("db", "rows"): [(1, 1, 1)], ("db", "odd"): [(2, 2, 2)]})
        await _corrupt(store, "odd")
        assert await store.load() == {("db", "rows"): ((1, 1, 1),)}


async def _corrupt(store: VolumeStore, tool: str) -> None:
    """Write a value ``load`` cannot read as the baseline of ``("db", tool)``, behind the store's back."""
    if isinstance(store, PostgresVolumeStore):
        await store.database.pool.execute("UPDATE volume_baselines SET samples = '[[1, -2, 3]]' WHERE tool = $1", tool)
    else:
        assert isinstance(store, SQLiteVolumeStore)
        sql = "UPDATE volume_baselines SET samples = 'not json' WHERE tool = ?"
        await store._run(lambda c: c.execute(sql, (tool,)))

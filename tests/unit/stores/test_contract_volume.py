"""The ``VolumeStore`` contract, run against every backend (``MemoryVolumeStore``, ``SQLiteVolumeStore``).

``BACKENDS`` opens a store on one backend (for SQLite: one file in the test's directory); a
"restart" opens a second store on the same backend after the first was closed. A backend joins
by adding an entry to ``BACKENDS``; every test here must pass unchanged against it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.stores.memory_volume import MemoryVolumeStore
from bastion.stores.sqlite_volume import SQLiteVolumeStore
from bastion.stores.volume import VolumeStore

Opener = Callable[[], VolumeStore]


def _memory(tmp: Path) -> Opener:
    shared = MemoryVolumeStore()  # "restarting" reopens the same object, as a file would be
    return lambda: shared


def _sqlite(tmp: Path) -> Opener:
    return lambda: SQLiteVolumeStore(tmp / "bastion.db")


BACKENDS: dict[str, Callable[[Path], Opener]] = {"memory": _memory, "sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return BACKENDS[request.param](tmp_path)


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

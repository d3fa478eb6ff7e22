"""The ``PinStore`` contract, run against every backend (``MemoryPinStore``, ``SQLitePinStore``,
``PostgresPinStore`` on the PostgreSQL on loopback: each test in a schema of its own).

Round trips, the first pin winning, held definitions replaced by a change and only moved by a
repeat, approval pinning exactly the hash held (and nothing else), baselines, versions that change
with every write that changes what a route serves, routes kept apart. ``handles`` opens stores on
ONE backend (for SQLite: one file; for PostgreSQL: one schema, a pool per handle), as two replicas
would; the replica tests use ``replica_handles``, which holds the backends whose handles share
their pins (the memory store is per process by design). A shared backend joins by adding an entry
to ``BACKENDS`` and its name to ``SHARED``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from stores_support import POSTGRES_URL, handles_fixture, postgres_schema

from bastion.catalog.pins import HeldDefinition, Pin, PinStore
from bastion.catalog.pins_memory import MemoryPinStore
from bastion.catalog.pins_postgres import PostgresPinStore
from bastion.catalog.pins_sqlite import SQLitePinStore
from bastion.stores.postgres import PostgresDatabase

NOW = 1_700_000_000.0
A, B = "a" * 64, "b" * 64

Opener = Callable[[], Awaitable[PinStore]]

#: Every backend of ``PinStore``: a factory of a store on the backend at ``tmp_path``.
BACKENDS: dict[str, Callable[[Path], PinStore]] = {
    "memory": lambda tmp: MemoryPinStore(),
    "sqlite": lambda tmp: SQLitePinStore(tmp / "bastion.db"),
    "postgres": lambda tmp: PostgresPinStore(PostgresDatabase(POSTGRES_URL, schema=postgres_schema(tmp))),
}
#: The backends whose handles (replicas, a restarted process, the CLI) share one set of pins.
SHARED = ("sqlite", "postgres")

handles = handles_fixture(BACKENDS)
replica_handles = handles_fixture({name: BACKENDS[name] for name in SHARED})


@pytest.fixture
async def store(handles: Opener) -> PinStore:
    return await handles()


def pin(name: str = "forecast", sha256: str = A, *, route: str = "weather", kind: str = "tool") -> Pin:
    return Pin(route, kind, name, sha256, f'{{"name":"{name}"}}', "first_use", False, NOW)  # type: ignore[arg-type]


def held(
    name: str = "forecast", sha256: str = B, *, route: str = "weather", kind: str = "tool", reason: str = "drift",
    action: str = "", seen: float = NOW,
) -> HeldDefinition:  # fmt: skip
    findings = ({"rule": "hidden-instruction", "severity": "high", "message": "m", "path": "/description",
                 "excerpt": "é\u200b"},) if action else ()  # fmt: skip
    return HeldDefinition(route, kind, name, sha256, f'{{"description":"{sha256[:4]}"}}', reason, action,  # type: ignore[arg-type]
                          findings, seen, seen)  # fmt: skip


async def test_a_route_never_written_has_nothing(store: PinStore) -> None:
    assert await store.pins("weather") == []
    assert await store.held("weather") == []
    assert await store.baselines("weather") == frozenset()
    assert await store.version("weather") == 0


async def test_the_first_pin_wins_and_a_second_changes_nothing(store: PinStore) -> None:
    first = pin()
    assert await store.pin_first([first]) == [first]
    version = await store.version("weather")
    assert version > 0
    assert await store.pin_first([pin(sha256=B), pin("alerts")]) == [first, pin("alerts")]
    assert await store.pins("weather") == [pin("alerts"), first]  # by kind, then name
    assert await store.version("weather") > version  # alerts was new
    version = await store.version("weather")
    await store.pin_first([pin(sha256=B)])
    assert await store.version("weather") == version
    assert await store.pin_first([]) == []


async def test_a_held_definition_is_replaced_by_a_change_and_only_moved_by_a_repeat(store: PinStore) -> None:
    assert await store.hold([held(action="hide", reason="finding")]) == [True]
    version = await store.version("weather")
    assert await store.hold([held(action="hide", reason="finding", seen=NOW + 60)]) == [False]
    [again] = await store.held("weather")
    assert (again.first_seen, again.last_seen) == (NOW, NOW + 60)
    assert again.findings[0]["excerpt"] == "é\u200b"  # findings round-trip as JSON, text intact
    assert await store.version("weather") == version  # nothing a route serves changed
    assert await store.hold([held(reason="new", seen=NOW + 61)]) == [False]  # same hash, other reason
    assert await store.version("weather") > version
    assert (await store.held("weather"))[0].reason == "new"
    assert await store.hold([held(sha256=A, seen=NOW + 120)]) == [True]  # another definition replaces it
    [replaced] = await store.held("weather")
    assert (replaced.sha256, replaced.first_seen, replaced.findings) == (A, NOW + 120, ())


async def test_approval_pins_exactly_the_hash_held_and_starts_baselines(store: PinStore) -> None:
    await store.pin_first([pin()])
    await store.hold([held(), held("alerts", A, reason="new"), held("summary", kind="prompt", reason="unpinned")])
    approved = await store.approve(
        "weather", [("tool", "forecast", B), ("tool", "alerts", B), ("prompt", "nothing", A)], approver="ada@x",
        now=NOW + 5,
    )  # fmt: skip
    assert approved == [Pin("weather", "tool", "forecast", B, '{"description":"bbbb"}', "ada@x", True, NOW + 5)]
    assert [p.sha256 for p in await store.pins("weather")] == [B]  # the drifted pin replaced
    assert [(h.kind, h.name) for h in await store.held("weather")] == [("tool", "alerts"), ("prompt", "summary")]
    assert await store.baselines("weather") == {"tool"}
    assert await store.approve("weather", [("tool", "forecast", B)], approver="ada@x", now=NOW) == []
    await store.approve("weather", [], approver="ada@x", now=NOW, baseline=("prompt", "resource_template"))
    assert await store.baselines("weather") == {"tool", "prompt", "resource_template"}


async def test_baselines_start_once(store: PinStore) -> None:
    assert await store.start_baseline("weather", "tool", NOW) is True
    version = await store.version("weather")
    assert await store.start_baseline("weather", "tool", NOW + 1) is False
    assert await store.version("weather") == version
    assert await store.baselines("weather") == {"tool"}


async def test_routes_are_kept_apart(store: PinStore) -> None:
    await store.pin_first([pin(route="weather")])
    await store.hold([held(route="mail")])
    await store.start_baseline("mail", "prompt", NOW)
    assert await store.pins("mail") == []
    assert await store.held("weather") == []
    assert await store.baselines("weather") == frozenset()
    assert [p.route for p in await store.pins("weather")] == ["weather"]


async def test_replicas_share_pins_and_the_first_of_two_racing_pins_wins(replica_handles: Opener) -> None:
    one, two = await replica_handles(), await replica_handles()
    kept = await asyncio.gather(one.pin_first([pin(sha256=A)]), two.pin_first([pin(sha256=B)]))
    assert kept[0] == kept[1]
    assert await one.pins("weather") == await two.pins("weather") == kept[0]
    await one.hold([held()])
    assert await two.version("weather") == await one.version("weather")
    assert [p.sha256 for p in await two.approve("weather", [("tool", "forecast", B)], approver="a", now=NOW)] == [B]
    assert await one.held("weather") == []


async def test_pins_survive_a_restart(replica_handles: Opener) -> None:
    first = await replica_handles()
    await first.pin_first([pin()])
    await first.hold([held(action="block", reason="finding")])
    await first.close()
    later = await replica_handles()
    assert await later.pins("weather") == [pin()]
    assert [(h.reason, h.action) for h in await later.held("weather")] == [("finding", "block")]
    assert dataclasses.asdict((await later.held("weather"))[0])["findings"][0]["rule"] == "hidden-instruction"


async def test_a_pin_written_through_one_replica_is_read_by_another(replica_handles: Opener) -> None:
    gateway, portal = await replica_handles(), await replica_handles()
    await gateway.pin_first([pin()])
    await gateway.hold([held(reason="drift")])
    version = await portal.version("weather")
    assert await portal.pins("weather") == [pin()]
    assert await portal.held("weather") == [held(reason="drift")]
    approved = await portal.approve("weather", [("tool", "forecast", B)], approver="ada@x", now=NOW + 5)
    assert await gateway.version("weather") > version  # the gateway's guard re-reads
    assert await gateway.pins("weather") == approved
    assert await gateway.held("weather") == []
    assert await gateway.baselines("weather") == {"tool"}


async def test_replicas_holding_one_definition_at_once_record_it_newly_held_once(replica_handles: Opener) -> None:
    replicas = [await replica_handles() for _ in range(4)]
    items = [held(f"tool-{i}", reason="new") for i in range(5)]
    answers = await asyncio.gather(*(replica.hold(items) for replica in replicas))
    assert [sum(column) for column in zip(*answers, strict=True)] == [1] * 5  # each newly held by one replica
    assert [h.name for h in await replicas[0].held("weather")] == [f"tool-{i}" for i in range(5)]


async def test_replicas_pinning_many_at_first_sight_agree_on_every_pin(replica_handles: Opener) -> None:
    replicas = [await replica_handles() for _ in range(4)]
    offers = [[pin(f"tool-{i}", sha256=str(r) * 64) for i in range(6)][:: 1 if r % 2 else -1] for r in range(4)]
    kept = await asyncio.gather(*(replica.pin_first(offer) for replica, offer in zip(replicas, offers, strict=True)))
    by_name = [{p.name: p for p in each} for each in kept]
    assert all(each == by_name[0] for each in by_name)  # one winner per definition, the same for all
    assert sorted(p.name for p in await replicas[3].pins("weather")) == [f"tool-{i}" for i in range(6)]
    started = await asyncio.gather(*(replica.start_baseline("weather", "tool", NOW) for replica in replicas))
    assert sorted(started) == [False, False, False, True]

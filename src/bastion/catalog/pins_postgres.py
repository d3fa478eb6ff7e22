"""The shared ``PinStore``: pins, held definitions and baselines in the PostgreSQL database of ``stores.postgres``.

Every replica reads and writes the tables ``definition_pins``, ``definition_held``,
``definition_baselines`` and ``definition_versions`` (migration ``0005_pins.sql``), so a definition
pinned at first sight by one replica is the pin every other holds its upstream to, and an
administrator's approval through any replica's portal (or ``bastion tools approve``) is served by
all. Each replica's ``DefinitionGuard`` keeps the route's pins in memory and re-reads them when
the route's ``version`` changed (it looks at most every ``recheck_s``).

Writes to a route are serialized as the embedded store's ``BEGIN IMMEDIATE`` serializes them: each
write transaction first takes a transaction-level advisory lock on each route it touches
(``pg_advisory_xact_lock(<pins>, hashtext(route))``, in route order, released at commit), then
runs the same statements as ``SQLitePinStore``. So of two replicas pinning the same definition at
first sight, the second sees the first's pin and keeps it (the first to pin wins), a definition
held by two replicas at once is "newly held" for one of them only (recorded once), and an approval
moves exactly the hash it was shown. Writes are rare (a changed listing, an approval); reads take
no lock.

Shapes: definitions are canonical JSON text, findings a JSON array (text); times are wall-clock
epoch seconds (``DOUBLE PRECISION``); names compare bytewise (``COLLATE "C"``), so lists come in the
same order as from SQLite. Errors: the driver's (``stores.postgres_tables.POSTGRES_ERRORS``) when
the database cannot be reached or refuses, ``RuntimeError`` before ``start``: the definition guard
raises it, which withholds the listing it was judging and refuses the call (fail closed); the CLI
exits 2.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import TypeVar, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bastion.catalog.pins import DEFINITION_KINDS, HeldDefinition, HoldReason, Pin, PinnedItem
from bastion.scan.findings import DefinitionKind
from bastion.stores.postgres_tables import PostgresTables

__all__ = ["PostgresPinStore"]

T = TypeVar("T")
Connection = PoolConnectionProxy

_LOCK_SPACE = 0x70696E73  # "pins": the first key of the routes' advisory locks
_PIN_COLUMNS = "route, kind, name, sha256, definition, approver, reviewed, pinned_at"
_HELD_COLUMNS = "route, kind, name, sha256, definition, reason, action, findings, first_seen, last_seen"
_ORDER = "ORDER BY CASE kind " + " ".join(f"WHEN '{k}' THEN {i}" for i, k in enumerate(DEFINITION_KINDS)) + " END, name"
_KEY = "route = $1 AND kind = $2 AND name = $3"
_BUMP = (
    "INSERT INTO definition_versions (route, version) VALUES ($1, 1) "
    "ON CONFLICT (route) DO UPDATE SET version = definition_versions.version + 1"
)
_START_BASELINE = (
    "INSERT INTO definition_baselines (route, kind, started_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (route, kind) DO NOTHING RETURNING kind"
)
_UPSERT_PIN = (
    f"INSERT INTO definition_pins ({_PIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "  # noqa: S608
    "ON CONFLICT (route, kind, name) DO UPDATE SET sha256 = excluded.sha256, definition = excluded.definition, "
    "approver = excluded.approver, reviewed = excluded.reviewed, pinned_at = excluded.pinned_at"
)
_UPSERT_HELD = (
    f"INSERT INTO definition_held ({_HELD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "  # noqa: S608
    "ON CONFLICT (route, kind, name) DO UPDATE SET sha256 = excluded.sha256, definition = excluded.definition, "
    "reason = excluded.reason, action = excluded.action, findings = excluded.findings, "
    "first_seen = excluded.first_seen, last_seen = excluded.last_seen"
)


def _pin(row: asyncpg.Record) -> Pin:
    return Pin(row["route"], row["kind"], row["name"], row["sha256"], row["definition"], row["approver"],
               row["reviewed"], row["pinned_at"])  # fmt: skip


def _held(row: asyncpg.Record) -> HeldDefinition:
    return HeldDefinition(
        row["route"], row["kind"], row["name"], row["sha256"], row["definition"], cast("HoldReason", row["reason"]),
        row["action"], tuple(json.loads(row["findings"])), row["first_seen"], row["last_seen"],
    )  # fmt: skip


async def _hold_one(c: Connection, item: HeldDefinition) -> bool:
    """``PinStore.hold`` of one item on ``c`` (inside the caller's transaction, its route locked)."""
    findings = json.dumps(list(item.findings), ensure_ascii=False, sort_keys=True)
    key = (item.route, item.kind, item.name)
    before = await c.fetchrow(f"SELECT sha256, reason, action FROM definition_held WHERE {_KEY}", *key)  # noqa: S608
    if before is not None and before["sha256"] == item.sha256:
        await c.execute(
            f"UPDATE definition_held SET reason = $4, action = $5, findings = $6, last_seen = $7 WHERE {_KEY}",  # noqa: S608
            *key, item.reason, item.action, findings, item.last_seen,
        )  # fmt: skip
        if (before["reason"], before["action"]) != (item.reason, item.action):
            await c.execute(_BUMP, item.route)
        return False
    await c.execute(_UPSERT_HELD, *key, item.sha256, item.definition, item.reason, item.action, findings,
                    item.first_seen, item.last_seen)  # fmt: skip
    await c.execute(_BUMP, item.route)
    return True


class PostgresPinStore(PostgresTables):
    """``PinStore`` in the ``definition_*`` tables of ``database`` (see the module docstring)."""

    LABEL = "pin store"

    async def _write(self, routes: Iterable[str], work: Callable[[Connection], Awaitable[T]]) -> T:
        """``work(connection)`` in one transaction holding the advisory lock of each of ``routes``."""
        async with self._pool.acquire() as c, c.transaction():
            for route in sorted(set(routes)):
                await c.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_SPACE, route)
            return await work(c)

    async def pins(self, route: str) -> list[Pin]:
        """See ``PinStore.pins``."""
        rows = await self._pool.fetch(f"SELECT {_PIN_COLUMNS} FROM definition_pins WHERE route = $1 {_ORDER}", route)  # noqa: S608
        return [_pin(row) for row in rows]

    async def held(self, route: str) -> list[HeldDefinition]:
        """See ``PinStore.held``."""
        rows = await self._pool.fetch(f"SELECT {_HELD_COLUMNS} FROM definition_held WHERE route = $1 {_ORDER}", route)  # noqa: S608
        return [_held(row) for row in rows]

    async def baselines(self, route: str) -> frozenset[DefinitionKind]:
        """See ``PinStore.baselines``."""
        rows = await self._pool.fetch("SELECT kind FROM definition_baselines WHERE route = $1", route)
        return frozenset(cast("DefinitionKind", row["kind"]) for row in rows)

    async def version(self, route: str) -> int:
        """See ``PinStore.version``: one primary-key read."""
        version = await self._pool.fetchval("SELECT version FROM definition_versions WHERE route = $1", route)
        return int(version) if version is not None else 0

    async def pin_first(self, pins: Sequence[Pin]) -> list[Pin]:
        """See ``PinStore.pin_first``: for each, insert unless pinned, then read what is kept."""
        given = list(pins)

        async def work(c: Connection) -> list[Pin]:
            kept: list[Pin] = []
            for pin in given:
                key = (pin.route, pin.kind, pin.name)
                inserted = await c.fetchval(
                    f"INSERT INTO definition_pins ({_PIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "  # noqa: S608
                    "ON CONFLICT (route, kind, name) DO NOTHING RETURNING true",
                    *key, pin.sha256, pin.definition, pin.approver, pin.reviewed, float(pin.pinned_at),
                )  # fmt: skip
                if inserted:
                    await c.execute(_BUMP, pin.route)
                row = await c.fetchrow(f"SELECT {_PIN_COLUMNS} FROM definition_pins WHERE {_KEY}", *key)  # noqa: S608
                if row is None:  # cannot happen: inserted, or there already, and the route locked
                    raise RuntimeError(f"the pin of {key} vanished")
                kept.append(_pin(row))
            return kept

        return await self._write((pin.route for pin in given), work) if given else []

    async def hold(self, items: Sequence[HeldDefinition]) -> list[bool]:
        """See ``PinStore.hold``: one read and one write per item, all in one transaction."""
        given = list(items)

        async def work(c: Connection) -> list[bool]:
            return [await _hold_one(c, item) for item in given]

        return await self._write((item.route for item in given), work) if given else []

    async def approve(
        self,
        route: str,
        items: Sequence[PinnedItem],
        *,
        approver: str,
        now: float,
        baseline: Collection[DefinitionKind] = (),
    ) -> list[Pin]:
        """See ``PinStore.approve``: one transaction."""
        wanted = list(items)
        extra = set(baseline)

        async def work(c: Connection) -> list[Pin]:
            pinned: list[Pin] = []
            for kind, name, sha256 in wanted:
                definition = await c.fetchval(
                    f"DELETE FROM definition_held WHERE {_KEY} AND sha256 = $4 RETURNING definition",  # noqa: S608
                    route, kind, name, sha256,
                )  # fmt: skip
                if definition is None:
                    continue
                pin = Pin(route, kind, name, sha256, definition, approver, True, float(now))
                await c.execute(_UPSERT_PIN, route, kind, name, sha256, definition, approver, True, float(now))
                pinned.append(pin)
            kinds = extra | {pin.kind for pin in pinned}
            for kind in sorted(kinds):
                await c.execute(_START_BASELINE, route, kind, float(now))
            if pinned or kinds:
                await c.execute(_BUMP, route)
            return pinned

        return await self._write((route,), work)

    async def start_baseline(self, route: str, kind: DefinitionKind, now: float) -> bool:
        """See ``PinStore.start_baseline``."""

        async def work(c: Connection) -> bool:
            started = await c.fetchval(_START_BASELINE, route, kind, float(now))
            if started is not None:
                await c.execute(_BUMP, route)
            return started is not None

        return await self._write((route,), work)

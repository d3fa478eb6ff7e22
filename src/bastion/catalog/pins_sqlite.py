"""The embedded ``PinStore``: pins, held definitions and baselines in tables of the data directory's file.

Shared by the gateway (its replicas on one file) and the CLI (``bastion tools diff`` and ``pins``
read it; approvals go through the gateway, which writes). The connection and transactions are
``bastion.stores.sqlite.SQLiteTables``': ``pin_first`` is one ``INSERT ... ON CONFLICT DO
NOTHING`` then a read in one ``BEGIN IMMEDIATE`` transaction (the first replica to pin wins), and
``approve`` moves each held definition to the pins, and bumps the route's version, in one.
Definitions are kept as their canonical JSON text, findings as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any, cast

from bastion.catalog.pins import DEFINITION_KINDS, HeldDefinition, HoldReason, Pin, PinnedItem
from bastion.scan.findings import DefinitionKind
from bastion.stores.sqlite import SQLiteTables

__all__ = ["SQLitePinStore"]

_KINDS = ", ".join(f"'{kind}'" for kind in DEFINITION_KINDS)
_DDL = f"""
CREATE TABLE IF NOT EXISTS definition_pins (
    route TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ({_KINDS})), name TEXT NOT NULL,
    sha256 TEXT NOT NULL, definition TEXT NOT NULL, approver TEXT NOT NULL, reviewed INTEGER NOT NULL,
    pinned_at REAL NOT NULL, PRIMARY KEY (route, kind, name));
CREATE TABLE IF NOT EXISTS definition_held (
    route TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ({_KINDS})), name TEXT NOT NULL,
    sha256 TEXT NOT NULL, definition TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('new', 'drift', 'finding', 'unpinned')), action TEXT NOT NULL,
    findings TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY (route, kind, name));
CREATE TABLE IF NOT EXISTS definition_baselines (
    route TEXT NOT NULL, kind TEXT NOT NULL, started_at REAL NOT NULL, PRIMARY KEY (route, kind));
CREATE TABLE IF NOT EXISTS definition_versions (route TEXT PRIMARY KEY, version INTEGER NOT NULL);
"""

_PIN_COLUMNS = "route, kind, name, sha256, definition, approver, reviewed, pinned_at"
_HELD_COLUMNS = "route, kind, name, sha256, definition, reason, action, findings, first_seen, last_seen"
_ORDER = "ORDER BY CASE kind " + " ".join(f"WHEN '{k}' THEN {i}" for i, k in enumerate(DEFINITION_KINDS)) + " END, name"
_SELECT_PINS = f"SELECT {_PIN_COLUMNS} FROM definition_pins WHERE route = ? {_ORDER}"  # noqa: S608
_SELECT_HELD = f"SELECT {_HELD_COLUMNS} FROM definition_held WHERE route = ? {_ORDER}"  # noqa: S608
_BUMP = (
    "INSERT INTO definition_versions (route, version) VALUES (?, 1) "
    "ON CONFLICT (route) DO UPDATE SET version = version + 1"
)


def _pin(row: tuple[Any, ...]) -> Pin:
    route, kind, name, sha256, definition, approver, reviewed, pinned_at = row
    return Pin(route, kind, name, sha256, definition, approver, bool(reviewed), pinned_at)


def _held(row: tuple[Any, ...]) -> HeldDefinition:
    route, kind, name, sha256, definition, reason, action, findings, first_seen, last_seen = row
    return HeldDefinition(
        route, kind, name, sha256, definition, cast("HoldReason", reason), action, tuple(json.loads(findings)),
        first_seen, last_seen,
    )  # fmt: skip


def _hold_one(c: Any, item: HeldDefinition) -> bool:
    """``PinStore.hold`` of one item on the connection ``c`` (inside the caller's transaction)."""
    findings = json.dumps(list(item.findings), ensure_ascii=False, sort_keys=True)
    key = (item.route, item.kind, item.name)
    before = c.execute(
        "SELECT sha256, reason, action FROM definition_held WHERE route = ? AND kind = ? AND name = ?", key
    ).fetchone()
    if before is not None and before[0] == item.sha256:
        c.execute(
            "UPDATE definition_held SET reason = ?, action = ?, findings = ?, last_seen = ? "
            "WHERE route = ? AND kind = ? AND name = ?",
            (item.reason, item.action, findings, item.last_seen, *key),
        )
        if (before[1], before[2]) != (item.reason, item.action):
            c.execute(_BUMP, (item.route,))
        return False
    c.execute(
        f"INSERT OR REPLACE INTO definition_held ({_HELD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        (*key, item.sha256, item.definition, item.reason, item.action, findings, item.first_seen, item.last_seen),
    )
    c.execute(_BUMP, (item.route,))
    return True


class SQLitePinStore(SQLiteTables):
    """``PinStore`` on SQLite at ``path`` (the data directory's ``bastion.db``)."""

    DDL = _DDL
    LABEL = "pin store"

    async def pins(self, route: str) -> list[Pin]:
        """See ``PinStore.pins``."""
        rows = await self._run(
            lambda c: c.execute(_SELECT_PINS, (route,)).fetchall(),
            write=False,
        )
        return [_pin(row) for row in rows]

    async def held(self, route: str) -> list[HeldDefinition]:
        """See ``PinStore.held``."""
        rows = await self._run(
            lambda c: c.execute(_SELECT_HELD, (route,)).fetchall(),
            write=False,
        )
        return [_held(row) for row in rows]

    async def baselines(self, route: str) -> frozenset[DefinitionKind]:
        """See ``PinStore.baselines``."""
        rows = await self._run(
            lambda c: c.execute("SELECT kind FROM definition_baselines WHERE route = ?", (route,)).fetchall(),
            write=False,
        )
        return frozenset(cast("DefinitionKind", row[0]) for row in rows)

    async def version(self, route: str) -> int:
        """See ``PinStore.version``."""
        row = await self._run(
            lambda c: c.execute("SELECT version FROM definition_versions WHERE route = ?", (route,)).fetchone(),
            write=False,
        )
        return int(row[0]) if row is not None else 0

    async def pin_first(self, pins: Sequence[Pin]) -> list[Pin]:
        """See ``PinStore.pin_first``: for each, insert unless pinned, then read what is kept."""
        given = list(pins)

        def work(c: Any) -> list[tuple[Any, ...]]:
            kept = []
            for pin in given:
                key = (pin.route, pin.kind, pin.name)
                inserted = c.execute(
                    f"INSERT INTO definition_pins ({_PIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
                    "ON CONFLICT (route, kind, name) DO NOTHING",
                    (*key, pin.sha256, pin.definition, pin.approver, int(pin.reviewed), pin.pinned_at),
                ).rowcount
                if inserted:
                    c.execute(_BUMP, (pin.route,))
                kept.append(c.execute(
                    f"SELECT {_PIN_COLUMNS} FROM definition_pins WHERE route = ? AND kind = ? AND name = ?",  # noqa: S608
                    key,
                ).fetchone())  # fmt: skip
            return kept

        return [_pin(row) for row in await self._run(work)] if given else []

    async def hold(self, items: Sequence[HeldDefinition]) -> list[bool]:
        """See ``PinStore.hold``: one read and one write per item, all in one transaction."""
        given = list(items)

        def work(c: Any) -> list[bool]:
            return [_hold_one(c, item) for item in given]

        return await self._run(work) if given else []

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

        def work(c: Any) -> list[Pin]:
            pinned: list[Pin] = []
            for kind, name, sha256 in wanted:
                row = c.execute(
                    "DELETE FROM definition_held WHERE route = ? AND kind = ? AND name = ? AND sha256 = ? "
                    "RETURNING definition",
                    (route, kind, name, sha256),
                ).fetchone()
                if row is None:
                    continue
                pin = Pin(route, kind, name, sha256, row[0], approver, True, now)
                c.execute(
                    f"INSERT OR REPLACE INTO definition_pins ({_PIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                    (route, kind, name, sha256, pin.definition, approver, 1, now),
                )
                pinned.append(pin)
            kinds = extra | {pin.kind for pin in pinned}
            for kind in kinds:
                c.execute(
                    "INSERT INTO definition_baselines (route, kind, started_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (route, kind) DO NOTHING",
                    (route, kind, now),
                )
            if pinned or kinds:
                c.execute(_BUMP, (route,))
            return pinned

        return await self._run(work)

    async def start_baseline(self, route: str, kind: DefinitionKind, now: float) -> bool:
        """See ``PinStore.start_baseline``."""

        def work(c: Any) -> bool:
            started = c.execute(
                "INSERT INTO definition_baselines (route, kind, started_at) VALUES (?, ?, ?) "
                "ON CONFLICT (route, kind) DO NOTHING",
                (route, kind, now),
            ).rowcount
            if started:
                c.execute(_BUMP, (route,))
            return bool(started)

        return await self._run(work)

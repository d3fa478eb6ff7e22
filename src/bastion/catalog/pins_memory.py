"""Pins in this process's memory: for tests and one-off processes.

Atomic per call because no method awaits while it reads and writes (one event loop). Per
process: another replica, the CLI or the next start sees none of it; a deployment keeps its pins
in ``SQLitePinStore``. Pins and held definitions are immutable, so the store hands out the stored
values themselves.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Self

from bastion.catalog.pins import DEFINITION_KINDS, HeldDefinition, Pin, PinnedItem
from bastion.scan.findings import DefinitionKind

__all__ = ["MemoryPinStore"]

Key = tuple[str, DefinitionKind, str]


def _order(key: Key) -> tuple[int, str]:
    return DEFINITION_KINDS.index(key[1]), key[2]


class MemoryPinStore:
    """``PinStore`` in dicts keyed by (route, kind, name). Not thread-safe: one per event loop."""

    def __init__(self) -> None:
        self._pins: dict[Key, Pin] = {}
        self._held: dict[Key, HeldDefinition] = {}
        self._baselines: dict[str, set[DefinitionKind]] = {}
        self._versions: dict[str, int] = {}

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to release (the pins stay until the store is dropped)."""

    async def __aenter__(self) -> Self:
        """``start`` and return the store."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """``close``."""
        await self.close()

    def _changed(self, route: str) -> None:
        self._versions[route] = self._versions.get(route, 0) + 1

    async def pins(self, route: str) -> list[Pin]:
        """See ``PinStore.pins``."""
        return [self._pins[key] for key in sorted((k for k in self._pins if k[0] == route), key=_order)]

    async def held(self, route: str) -> list[HeldDefinition]:
        """See ``PinStore.held``."""
        return [self._held[key] for key in sorted((k for k in self._held if k[0] == route), key=_order)]

    async def baselines(self, route: str) -> frozenset[DefinitionKind]:
        """See ``PinStore.baselines``."""
        return frozenset(self._baselines.get(route, ()))

    async def version(self, route: str) -> int:
        """See ``PinStore.version``."""
        return self._versions.get(route, 0)

    async def pin_first(self, pins: Sequence[Pin]) -> list[Pin]:
        """See ``PinStore.pin_first``."""
        kept: list[Pin] = []
        for pin in pins:
            stored = self._pins.setdefault((pin.route, pin.kind, pin.name), pin)
            if stored is pin:
                self._changed(pin.route)
            kept.append(stored)
        return kept

    async def hold(self, items: Sequence[HeldDefinition]) -> list[bool]:
        """See ``PinStore.hold``."""
        return [self._hold(item) for item in items]

    def _hold(self, item: HeldDefinition) -> bool:
        key = (item.route, item.kind, item.name)
        before = self._held.get(key)
        if before is not None and before.sha256 == item.sha256:
            self._held[key] = replace(item, first_seen=before.first_seen)
            if (before.reason, before.action) != (item.reason, item.action):
                self._changed(item.route)
            return False
        self._held[key] = item
        self._changed(item.route)
        return True

    async def approve(
        self,
        route: str,
        items: Sequence[PinnedItem],
        *,
        approver: str,
        now: float,
        baseline: Collection[DefinitionKind] = (),
    ) -> list[Pin]:
        """See ``PinStore.approve``."""
        pinned: list[Pin] = []
        for kind, name, sha256 in items:
            key = (route, kind, name)
            held = self._held.get(key)
            if held is None or held.sha256 != sha256:
                continue
            del self._held[key]
            pin = Pin(route, kind, name, sha256, held.definition, approver, True, now)
            self._pins[key] = pin
            pinned.append(pin)
        kinds = {*baseline, *(pin.kind for pin in pinned)}
        self._baselines.setdefault(route, set()).update(kinds)
        if pinned or kinds:
            self._changed(route)
        return pinned

    async def start_baseline(self, route: str, kind: DefinitionKind, now: float) -> bool:
        """See ``PinStore.start_baseline``."""
        started = self._baselines.setdefault(route, set())
        if kind in started:
            return False
        started.add(kind)
        self._changed(route)
        return True

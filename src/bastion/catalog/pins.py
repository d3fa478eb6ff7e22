"""Pins: the definitions an administrator (or a route's first sight) approved, and those held back.

Issue 15, "Pinning and quarantine" (docs/architecture.md, "Pinning and quarantine"). For each
route and each definition, identified by its kind (``tool``, ``prompt``, ``resource``,
``resource_template``) and its name (a tool's or prompt's ``name``, a resource's ``uri``, a
template's ``uriTemplate``), the store keeps:

- a ``Pin``: the SHA-256 of the definition's canonical JSON (RFC 8785, the catalog's
  ``definition_sha256``) and that JSON itself (for diffs), who approved it and when. ``reviewed``
  says whether a person approved exactly this definition (``bastion tools approve``, the portal);
  a pin taken automatically at first sight (``pin: first_use``) is not reviewed, so scanner
  findings still apply to it;
- a ``HeldDefinition``: the latest definition seen that is not served as it is (new while the
  kind has a baseline, changed since its pin, or with a scanner finding that hides it or blocks
  the route), or, on a route whose pins an administrator has not started yet, each definition as
  first seen (``unpinned``: served, listed for review). One per (route, kind, name): a later
  change replaces it;
- a baseline per (route, kind): pins of that kind have started (an approval, or the first complete
  listing under ``first_use``); from then on a definition without a pin is new;
- a version per route, changed by every write that changes what the route serves (pins,
  baselines, held definitions), which a gateway replica compares before re-reading.

``PinStore`` is the protocol. Backends: ``MemoryPinStore`` (``catalog.pins_memory``, per process,
for tests), ``SQLitePinStore`` (``catalog.pins_sqlite``, tables in the data directory's
database, shared by the gateway and the CLI) and ``PostgresPinStore`` (``catalog.pins_postgres``,
with ``stores.postgres``: shared by every replica). The contract suite is
``tests/unit/stores/test_contract_pins.py``. Times are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bastion.scan.findings import DefinitionKind

__all__ = [
    "DEFINITION_KINDS",
    "FIRST_USE",
    "HeldDefinition",
    "HoldReason",
    "Pin",
    "PinStore",
    "PinnedItem",
]

DEFINITION_KINDS: tuple[DefinitionKind, ...] = ("tool", "prompt", "resource", "resource_template")
"""Every kind of definition, in the order lists show them."""

FIRST_USE = "first_use"
"""``Pin.approver`` of a pin taken automatically at first sight (``pin: first_use``)."""

HoldReason = Literal["new", "drift", "finding", "unpinned"]
"""Why a definition is held: ``new`` (no pin, while the kind has a baseline), ``drift`` (it differs
from its pin), ``finding`` (a scanner finding hides it or blocks the route), ``unpinned`` (the
route's pins have not started: served, and listed for an administrator to approve)."""

PinnedItem = tuple[DefinitionKind, str, str]
"""``(kind, name, sha256)``: one definition, exactly."""


@dataclass(frozen=True, slots=True)
class Pin:
    """The approved definition of ``(route, kind, name)``: ``sha256`` of its canonical JSON
    ``definition`` (text), approved by ``approver`` (a person's label, or ``FIRST_USE``) at
    ``pinned_at``; ``reviewed`` when a person approved exactly this definition."""

    route: str
    kind: DefinitionKind
    name: str
    sha256: str
    definition: str
    approver: str
    reviewed: bool
    pinned_at: float


@dataclass(frozen=True, slots=True)
class HeldDefinition:
    """The latest definition of ``(route, kind, name)`` that waits for an administrator.

    ``definition`` is its canonical JSON text; ``reason`` why it is held (``HoldReason``);
    ``action`` what the route's ``on_finding`` made of its worst finding (``warn``, ``hide``,
    ``block``, or ``""`` without finding); ``findings`` the scanner's findings as JSON objects
    (``rule``, ``severity``, ``message``, ``path``, ``excerpt``); ``first_seen`` / ``last_seen``
    when this exact definition was first and last seen.
    """

    route: str
    kind: DefinitionKind
    name: str
    sha256: str
    definition: str
    reason: HoldReason
    action: str
    findings: tuple[dict[str, Any], ...]
    first_seen: float
    last_seen: float

    @property
    def served(self) -> bool:
        """Whether the definition is served while it waits: ``unpinned`` (findings at most warn)."""
        return self.reason == "unpinned"


class PinStore(Protocol):
    """The pins of every route of one Bastion deployment (see the module docstring)."""

    async def start(self) -> None:
        """Open the store (create tables); idempotent."""

    async def close(self) -> None:
        """Release the store's resources; idempotent."""

    async def pins(self, route: str) -> list[Pin]:
        """The route's pins, by kind then name."""

    async def held(self, route: str) -> list[HeldDefinition]:
        """The route's held definitions, by kind then name."""

    async def baselines(self, route: str) -> frozenset[DefinitionKind]:
        """The kinds whose pins have started on the route."""

    async def version(self, route: str) -> int:
        """A number that changes whenever the route's pins, baselines or held definitions change
        (0 for a route never written)."""

    async def pin_first(self, pins: Sequence[Pin]) -> list[Pin]:
        """In one transaction, keep each of ``pins`` unless its (route, kind, name) has a pin
        already; returns the pins kept, in the order given (each the one given, or the one that was
        there: the first replica to pin wins)."""

    async def hold(self, items: Sequence[HeldDefinition]) -> list[bool]:
        """In one transaction, keep each of ``items`` as the held definition of its (route, kind,
        name). The same ``sha256`` as the one held only moves ``last_seen`` (and takes the item's
        reason, action and findings); another replaces it. Returns, in the order given, whether
        each was newly held (none was, or another ``sha256``), so each is recorded once."""

    async def approve(
        self,
        route: str,
        items: Sequence[PinnedItem],
        *,
        approver: str,
        now: float,
        baseline: Collection[DefinitionKind] = (),
    ) -> list[Pin]:
        """In one transaction: pin each held definition of ``items`` whose ``sha256`` is still
        the held one (reviewed, by ``approver`` at ``now``; replacing any pin), drop it from the
        held ones, and start the baselines of ``baseline`` and of the kinds approved. Returns the
        new pins; an item that is not held with that ``sha256`` (approved meanwhile, or changed
        since it was shown) is left out, nothing else changes for it."""

    async def start_baseline(self, route: str, kind: DefinitionKind, now: float) -> bool:
        """Start the baseline of ``kind`` on ``route``; returns whether it was not started yet."""

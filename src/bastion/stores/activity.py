"""What a caller has done: session caps and data-flow labels, counted atomically per key.

``ActivityStore`` keeps, per opaque key (an MCP session, or a principal and OAuth client;
``bastion.limits.activity`` builds the keys), the counts that session caps bound (calls,
destructive calls, distinct tools, bytes returned) and the labels of the tools touched
(``context.session_labels``). An entry lives while it is used: it is forgotten once
``idle_s`` seconds pass without a write to it (each write sets that deadline again).

Times are wall-clock epoch seconds passed in by the caller, as for ``RateCounter``. The
embedded backend is ``bastion.stores.memory_activity.MemoryActivityStore`` (one process);
with ``stores.redis`` it is ``bastion.stores.redis_activity.RedisActivityStore`` (every
replica; Redis expires idle keys itself, so its ``sweep`` returns 0). The contract suite is
``tests/unit/stores/test_contract_activity.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["ActivityStore", "CapName", "CapRefusal", "Caps"]

CapName = Literal["calls", "destructive_calls", "distinct_tools", "result_bytes"]


@dataclass(frozen=True, slots=True)
class Caps:
    """The most one key may do; ``None``: no cap. ``calls`` and ``destructive_calls`` count
    admitted calls, ``distinct_tools`` different tool names, ``result_bytes`` bytes returned."""

    calls: int | None = None
    destructive_calls: int | None = None
    distinct_tools: int | None = None
    result_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class CapRefusal:
    """Why ``ActivityStore.admit`` refused a call: the cap, its value, what the key has used."""

    cap: CapName
    limit: int
    used: int


class ActivityStore(Protocol):
    """Activity per key. Every method is atomic per key; ``admit`` checks and counts in one step,
    so a cap of N admits at most N calls however many arrive at once."""

    async def admit(
        self, key: str, caps: Caps, *, tool: str | None, destructive: bool, now: float, idle_s: float
    ) -> CapRefusal | None:
        """Count one call on ``key`` (``tool``: the tool's name, ``None`` for a resource or prompt;
        ``destructive``: the tool's risk) unless it would go past a cap in ``caps``, or the bytes
        already returned reached ``caps.result_bytes``; a refused call is not counted. Returns
        ``None`` when counted, else the first cap that refused (in ``CapName`` order)."""
        ...

    async def add_bytes(self, key: str, count: int, *, now: float, idle_s: float) -> None:
        """Add ``count`` bytes returned to an existing ``key`` (an unknown key is left alone)."""
        ...

    async def mark(self, key: str, labels: Iterable[str], *, now: float, idle_s: float) -> None:
        """Add ``labels`` to ``key`` and keep it alive for ``idle_s``; with no labels, only keep an
        existing key alive (an unknown key is not created)."""
        ...

    async def labels(self, key: str, *, now: float) -> frozenset[str]:
        """The labels marked on ``key`` (empty when none, or when the key was idle too long)."""
        ...

    async def sweep(self, now: float) -> int:
        """Forget every key idle at ``now``; returns how many (0 from a backend whose server
        expires idle keys itself: the count is only informative)."""
        ...

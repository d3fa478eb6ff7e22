"""Rate counters: how many events a key had in a sliding window, counted atomically.

``RateCounter`` is the store behind every "at most N in T seconds" rule: the sign-in
throttle uses it today (failed password sign-ins per username) and the limits stage
will (calls per principal and tool). A key allows ``limit`` hits in any ``window_s``
seconds; a hit that would go past the limit is refused and NOT counted, so a caller
that keeps knocking is let in again as soon as its oldest counted hit is ``window_s``
old (a sliding-window log). Keys are opaque strings; callers prefix them with what
they count (``sign-in:``, ``limit:``) so that rules sharing a backend never collide.

Times are wall-clock epoch seconds (``time.time()``), passed in by the caller so that
replicas sharing a backend agree and tests need no clock patching. The backends, all
run by the contract suite in ``tests/unit/stores/test_contract_counters.py``:
``bastion.stores.memory_counters.MemoryRateCounter`` (one process),
``bastion.stores.sqlite_counters.SQLiteRateCounter`` (the data directory's SQLite file:
survives a restart, shared by processes on one file) and
``bastion.stores.redis_counters.RedisRateCounter`` (shared by replicas: a sorted set per
key, trimmed, counted and added to in one Lua script).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["RateCounter", "RateDecision"]


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The answer of ``RateCounter.hit`` / ``peek``.

    ``allowed``: the hit was counted (``hit``) or would be (``peek``); ``remaining``: hits
    still allowed in the window after this answer (0 when refused); ``retry_after_s``:
    seconds until the next hit would be allowed (0.0 when ``remaining`` > 0).
    """

    allowed: bool
    remaining: int
    retry_after_s: float


class RateCounter(Protocol):
    """Counts hits per key in a sliding window. Every method is atomic per key."""

    async def hit(self, key: str, limit: int, window_s: float, *, now: float) -> RateDecision:
        """Count one hit on ``key`` at ``now`` if fewer than ``limit`` were counted in
        ``(now - window_s, now]``; a refused hit is not counted. Raises ``ValueError`` when
        ``limit`` < 1 or ``window_s`` <= 0."""
        ...

    async def peek(self, key: str, limit: int, window_s: float, *, now: float) -> RateDecision:
        """What ``hit`` would answer at ``now``, without counting anything."""
        ...

    async def reset(self, key: str) -> None:
        """Forget every hit on ``key`` (idempotent)."""
        ...

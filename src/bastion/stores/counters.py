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

import math
from dataclasses import dataclass
from typing import Protocol

__all__ = ["RateCounter", "RateDecision", "check_rate", "left_window_by"]


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


def check_rate(limit: int, window_s: float) -> None:
    """Raise ``ValueError`` unless ``limit`` >= 1 and ``window_s`` > 0 (every backend's precondition)."""
    if limit < 1 or not window_s > 0:
        raise ValueError("a rate needs limit >= 1 and window_s > 0")


def left_window_by(now: float, window_s: float) -> float:
    """The last time a hit can have and have left the window at ``now``: every hit at or before it
    has (``now - at >= window_s``, in doubles, as ``MemoryRateCounter`` decides), every later one
    has not. ``now - window_s`` moved by the ulp or two its rounding is off, so that the backends
    that store times (SQLite, Redis) answer to the last bit as the memory one does."""
    bound = now - window_s
    for _ in range(8):  # down while a hit at bound would still be in
        if now - bound >= window_s:
            break
        bound = math.nextafter(bound, -math.inf)
    for _ in range(8):  # up while a hit just after bound has left too
        later = math.nextafter(bound, math.inf)
        if not now - later >= window_s:
            break
        bound = later
    return bound

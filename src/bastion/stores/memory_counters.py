"""The embedded rate counter: sliding-window logs in this process's memory.

Atomic per key because no method awaits between reading and writing a key's log (one
event loop). With several replicas each counts on its own, so a rule allows ``limit``
hits per replica per window; a shared backend makes it one count.
"""

from __future__ import annotations

from collections import deque

from bastion.stores.counters import RateDecision, check_rate

__all__ = ["MemoryRateCounter"]


class MemoryRateCounter:
    """``RateCounter`` in memory. At most ``max_keys`` keys are tracked; past that the key hit
    least recently is forgotten first (its hits no longer count). Not thread-safe: one
    instance per event loop."""

    def __init__(self, *, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}  # insertion order: least recently hit first

    async def hit(self, key: str, limit: int, window_s: float, *, now: float) -> RateDecision:
        """See ``RateCounter.hit``."""
        decision = self._decide(key, limit, window_s, now, count=True)
        while len(self._hits) > self._max_keys:
            del self._hits[next(iter(self._hits))]
        return decision

    async def peek(self, key: str, limit: int, window_s: float, *, now: float) -> RateDecision:
        """See ``RateCounter.peek``."""
        return self._decide(key, limit, window_s, now, count=False)

    async def reset(self, key: str) -> None:
        """See ``RateCounter.reset``."""
        self._hits.pop(key, None)

    def _decide(self, key: str, limit: int, window_s: float, now: float, *, count: bool) -> RateDecision:
        check_rate(limit, window_s)
        log = self._hits.pop(key, None) or deque()
        while log and now - log[0] >= window_s:  # the oldest hit has left the window
            log.popleft()
        allowed = len(log) < limit
        if allowed and count:
            log.append(now)
        if log:
            self._hits[key] = log  # re-inserted: most recently used last
        remaining = max(0, limit - len(log))
        retry_after = 0.0 if remaining else max(0.0, window_s - (now - log[-limit]))
        return RateDecision(allowed, remaining, retry_after)

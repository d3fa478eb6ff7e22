"""The embedded continuation store: request states and task ids in this process's memory.

Bounded in number (the oldest forgotten first) and in time (each entry's ``expires``).
Per process: with several replicas each knows only what was issued through it, so a
continuation presented to another replica is refused there (never let through); ``stores.redis``
shares them (``bastion.stores.redis_continuations``).
"""

from __future__ import annotations

from collections import OrderedDict

from bastion.stores.continuations import Continuation, ContinuationKind, continuation_key

__all__ = ["MemoryContinuationStore"]


class MemoryContinuationStore:
    """``ContinuationStore`` in memory: at most ``max_entries``, the oldest forgotten first.
    Keys are ``continuation_key`` digests; the values are not kept. One instance per event loop."""

    def __init__(self, *, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._entries: OrderedDict[bytes, Continuation] = OrderedDict()
        self._max = max_entries

    async def remember(
        self, principal_key: str, route: str, kind: ContinuationKind, value: str, continuation: Continuation
    ) -> None:
        """See ``ContinuationStore.remember``."""
        key = continuation_key(principal_key, route, kind, value)
        self._entries[key] = continuation
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def find(
        self, principal_key: str, route: str, kind: ContinuationKind, value: str, *, now: float
    ) -> Continuation | None:
        """See ``ContinuationStore.find`` (an expired entry is forgotten)."""
        key = continuation_key(principal_key, route, kind, value)
        continuation = self._entries.get(key)
        if continuation is None:
            return None
        if continuation.expires <= now:
            del self._entries[key]
            return None
        return continuation

    def __len__(self) -> int:
        return len(self._entries)

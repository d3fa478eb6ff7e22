"""The embedded activity store: session caps and data-flow labels in this process's memory.

Atomic per key because no method awaits between reading and writing an entry (one event
loop). With several replicas each keeps its own, so a session's caps and labels are those of
the calls it made through this process; ``stores.redis`` makes them one
(``bastion.stores.redis_activity``).
"""

from __future__ import annotations

from collections.abc import Iterable

from bastion.stores.activity import CapRefusal, Caps

__all__ = ["MemoryActivityStore"]


class _Entry:
    __slots__ = ("calls", "destructive_calls", "expires", "labels", "result_bytes", "tools")

    def __init__(self) -> None:
        self.calls = 0
        self.destructive_calls = 0
        self.result_bytes = 0
        self.tools: set[str] = set()
        self.labels: frozenset[str] = frozenset()
        self.expires = 0.0


class MemoryActivityStore:
    """``ActivityStore`` in memory, at most ``max_keys`` live keys: when full, idle keys are swept;
    if none is idle, a new key is refused with ``RuntimeError`` (the caller fails closed: never a
    live session's counts dropped to make room)."""

    def __init__(self, *, max_keys: int = 1_000_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._max_keys = max_keys
        self._entries: dict[str, _Entry] = {}

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= now:
            del self._entries[key]
            return None
        return entry

    def _create(self, key: str, now: float) -> _Entry:
        if len(self._entries) >= self._max_keys:
            self._sweep(now)
            if len(self._entries) >= self._max_keys:
                raise RuntimeError(f"the activity store holds {self._max_keys} live keys")
        entry = self._entries[key] = _Entry()
        return entry

    async def admit(
        self, key: str, caps: Caps, *, tool: str | None, destructive: bool, now: float, idle_s: float
    ) -> CapRefusal | None:
        """See ``ActivityStore.admit``."""
        entry = self._live(key, now) or self._create(key, now)
        refusal: CapRefusal | None = None
        new_tool = tool is not None and tool not in entry.tools
        if caps.calls is not None and entry.calls >= caps.calls:
            refusal = CapRefusal("calls", caps.calls, entry.calls)
        elif caps.destructive_calls is not None and destructive and entry.destructive_calls >= caps.destructive_calls:
            refusal = CapRefusal("destructive_calls", caps.destructive_calls, entry.destructive_calls)
        elif caps.distinct_tools is not None and new_tool and len(entry.tools) >= caps.distinct_tools:
            refusal = CapRefusal("distinct_tools", caps.distinct_tools, len(entry.tools))
        elif caps.result_bytes is not None and entry.result_bytes >= caps.result_bytes:
            refusal = CapRefusal("result_bytes", caps.result_bytes, entry.result_bytes)
        entry.expires = now + idle_s
        if refusal is not None:
            return refusal
        entry.calls += 1
        entry.destructive_calls += destructive
        if new_tool and tool is not None:
            entry.tools.add(tool)
        return None

    async def add_bytes(self, key: str, count: int, *, now: float, idle_s: float) -> None:
        """See ``ActivityStore.add_bytes``."""
        entry = self._live(key, now)
        if entry is not None:
            entry.result_bytes += count
            entry.expires = now + idle_s

    async def mark(self, key: str, labels: Iterable[str], *, now: float, idle_s: float) -> None:
        """See ``ActivityStore.mark``."""
        entry = self._live(key, now)
        fresh = frozenset(labels)
        if entry is None:
            if not fresh:
                return
            entry = self._create(key, now)
        if not fresh <= entry.labels:
            entry.labels = entry.labels | fresh
        entry.expires = now + idle_s

    async def labels(self, key: str, *, now: float) -> frozenset[str]:
        """See ``ActivityStore.labels``."""
        entry = self._live(key, now)
        return entry.labels if entry is not None else frozenset()

    async def sweep(self, now: float) -> int:
        """See ``ActivityStore.sweep``."""
        return self._sweep(now)

    def _sweep(self, now: float) -> int:
        idle = [key for key, entry in self._entries.items() if entry.expires <= now]
        for key in idle:
            del self._entries[key]
        return len(idle)

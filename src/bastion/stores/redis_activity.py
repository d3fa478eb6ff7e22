"""The shared ``ActivityStore``: session caps and data-flow labels in Redis, so that a session's
counts and labels are the same whichever replica its calls reach.

Layout: one hash per activity key, ``<prefix><hex SHA-256 of the key>`` (the keys name sessions and
principals: only their digests reach Redis), with the fields ``calls``, ``destructive``, ``bytes``,
``tools`` (how many distinct tools), ``t:<tool>`` per tool called, ``l:<label>`` per label marked,
and ``deadline``: the caller's ``now`` of the last write plus ``idle_s`` (epoch seconds).

Whether an entry is idle is judged in each script on ``deadline`` against the caller's ``now`` (as
the embedded store does; an idle entry a script meets is deleted and, for a write, started afresh).
Redis also expires each hash ``idle_s`` plus a minute after its last write, relative to its own
clock (``PEXPIRE``), so that nothing stays that nobody asks for again. Hence ``sweep`` has nothing to
do and returns 0: the gateway's sweep only logs a failure and ignores the count.

Every method is one Lua script on one key, which Redis runs atomically: ``admit`` checks every cap
and counts the call in one step, so a cap of N admits at most N calls however many replicas race.

Errors: every method raises ``redis.exceptions.RedisError`` (or ``OSError``) when Redis cannot be
reached; ``SessionActivity``'s callers (the authorize and limits stages) then refuse the call (fail
closed), never let it through uncounted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, cast

from bastion.stores.activity import CapName, CapRefusal, Caps
from bastion.stores.redis_store import RedisStore

__all__ = ["RedisActivityStore"]

_GRACE_S = 60.0
"""Redis drops an entry this long after it would have gone idle (a backstop; the scripts judge on ``now``)."""

# Shared head of every script: KEYS[1] the entry; ARGV[1] now. Deletes the entry if it has gone idle
# and sets `live` to whether it still exists.
_LIVE = """
local now = tonumber(ARGV[1])
local deadline = redis.call('HGET', KEYS[1], 'deadline')
local live = deadline ~= false
if live and tonumber(deadline) <= now then redis.call('DEL', KEYS[1]); live = false end
"""
# ARGV: now, deadline, ttl_ms, tool ('' with has_tool 0: none), has_tool, destructive (0/1), then the
# caps calls, destructive_calls, distinct_tools, result_bytes (-1: none). Returns nil when counted,
# else {cap, limit, used}; either way the entry's deadline is set again.
_ADMIT = (
    _LIVE
    + """
local function count(field) return tonumber(redis.call('HGET', KEYS[1], field) or '0') end
local calls, destructive, tools, bytes = count('calls'), count('destructive'), count('tools'), count('bytes')
local is_destructive = ARGV[6] == '1'
local new_tool = ARGV[5] == '1' and redis.call('HEXISTS', KEYS[1], 't:' .. ARGV[4]) == 0
local cap_calls, cap_destructive = tonumber(ARGV[7]), tonumber(ARGV[8])
local cap_tools, cap_bytes = tonumber(ARGV[9]), tonumber(ARGV[10])
local refusal = nil
if cap_calls >= 0 and calls >= cap_calls then refusal = {'calls', cap_calls, calls}
elseif cap_destructive >= 0 and is_destructive and destructive >= cap_destructive then
  refusal = {'destructive_calls', cap_destructive, destructive}
elseif cap_tools >= 0 and new_tool and tools >= cap_tools then refusal = {'distinct_tools', cap_tools, tools}
elseif cap_bytes >= 0 and bytes >= cap_bytes then refusal = {'result_bytes', cap_bytes, bytes}
end
redis.call('HSET', KEYS[1], 'deadline', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if refusal then return refusal end
redis.call('HINCRBY', KEYS[1], 'calls', 1)
if is_destructive then redis.call('HINCRBY', KEYS[1], 'destructive', 1) end
if new_tool then redis.call('HSET', KEYS[1], 't:' .. ARGV[4], 1); redis.call('HINCRBY', KEYS[1], 'tools', 1) end
return nil
"""
)
# ARGV: now, deadline, ttl_ms, count. Only a live entry gets the bytes.
_ADD_BYTES = (
    _LIVE
    + """
if not live then return 0 end
redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[4])
redis.call('HSET', KEYS[1], 'deadline', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)
# ARGV: now, deadline, ttl_ms, labels... With no labels only a live entry is kept alive.
_MARK = (
    _LIVE
    + """
if not live and #ARGV < 4 then return 0 end
for i = 4, #ARGV do redis.call('HSET', KEYS[1], 'l:' .. ARGV[i], 1) end
redis.call('HSET', KEYS[1], 'deadline', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)
# ARGV: now. The labels of a live entry.
_LABELS = (
    _LIVE
    + """
local labels = {}
if not live then return labels end
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, 2) == 'l:' then labels[#labels + 1] = string.sub(field, 3) end
end
return labels
"""
)


class RedisActivityStore(RedisStore):
    """``ActivityStore`` in the Redis at ``url`` under key ``prefix`` (module docstring).
    ``start``/``close`` or ``async with``."""

    def __init__(self, url: str, *, prefix: str = "bastion:act:") -> None:
        super().__init__(url, prefix)
        self._admit = self._redis.register_script(_ADMIT)
        self._add_bytes = self._redis.register_script(_ADD_BYTES)
        self._mark = self._redis.register_script(_MARK)
        self._labels = self._redis.register_script(_LABELS)

    def _key(self, key: str) -> str:
        return self._prefix + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    @staticmethod
    def _times(now: float, idle_s: float) -> list[Any]:
        return [repr(now), repr(now + idle_s), int((idle_s + _GRACE_S) * 1000)]

    async def admit(
        self, key: str, caps: Caps, *, tool: str | None, destructive: bool, now: float, idle_s: float
    ) -> CapRefusal | None:
        """See ``ActivityStore.admit``."""
        limits = [-1 if cap is None else cap for cap in (caps.calls, caps.destructive_calls, caps.distinct_tools,
                                                         caps.result_bytes)]  # fmt: skip
        refusal = await self._admit(
            keys=[self._key(key)],
            args=[*self._times(now, idle_s), tool or "", int(tool is not None), int(destructive), *limits],
        )
        if refusal is None:
            return None
        cap, limit, used = refusal
        return CapRefusal(cast("CapName", _text(cap)), int(limit), int(used))

    async def add_bytes(self, key: str, count: int, *, now: float, idle_s: float) -> None:
        """See ``ActivityStore.add_bytes``."""
        await self._add_bytes(keys=[self._key(key)], args=[*self._times(now, idle_s), int(count)])

    async def mark(self, key: str, labels: Iterable[str], *, now: float, idle_s: float) -> None:
        """See ``ActivityStore.mark``."""
        await self._mark(keys=[self._key(key)], args=[*self._times(now, idle_s), *sorted(set(labels))])

    async def labels(self, key: str, *, now: float) -> frozenset[str]:
        """See ``ActivityStore.labels``."""
        found = await self._labels(keys=[self._key(key)], args=[repr(now)])
        return frozenset(_text(label) for label in found)

    async def sweep(self, now: float) -> int:
        """See ``ActivityStore.sweep``: 0, Redis expires idle entries itself (module docstring)."""
        return 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

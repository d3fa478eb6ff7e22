"""The shared ``ContinuationStore``: request states and task ids in Redis, so that a state or task
id issued through one replica is continued through any other.

Layout: one string key per continuation, ``<prefix><hex continuation_key digest>`` (never the
values themselves), holding the ``Continuation`` as JSON. Whether it has expired is judged on the
caller's ``now`` against ``Continuation.expires`` (as the embedded store does); Redis also drops the
key a minute after ``expires`` by its own clock (``PXAT``), a backstop so that what nobody asks for
again does not stay. A continuation whose ``expires`` is already past is therefore not kept.

Each operation is one Redis command (``SET``, ``GET``), atomic by itself; a ``find`` that sees an
expired entry deletes it only if it still holds what was read (a Lua script), so that it cannot
drop a newer one another replica just remembered.

Errors: every method raises ``redis.exceptions.RedisError`` (or ``OSError``) when Redis cannot be
reached; the continuation stage then refuses the request (``ContinuationsUnavailable``, 503), and
the filter that records an issued continuation fails, so the message carrying it is not relayed
(fail closed either way).
"""

from __future__ import annotations

import json

from bastion.stores.continuations import Continuation, ContinuationKind, continuation_key
from bastion.stores.redis_store import RedisStore

__all__ = ["RedisContinuationStore"]

_GRACE_S = 60.0
"""Redis drops a continuation this long after its ``expires`` (a backstop; ``find`` judges on ``now``)."""

# KEYS[1] continuation; ARGV[1] the value read. Deletes the key only while it still holds that value.
_FORGET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisContinuationStore(RedisStore):
    """``ContinuationStore`` in the Redis at ``url`` under key ``prefix`` (module docstring).
    ``start``/``close`` or ``async with``."""

    def __init__(self, url: str, *, prefix: str = "bastion:cont:") -> None:
        super().__init__(url, prefix)
        self._forget = self._redis.register_script(_FORGET)

    def _key(self, principal_key: str, route: str, kind: ContinuationKind, value: str) -> str:
        return self._prefix + continuation_key(principal_key, route, kind, value).hex()

    async def remember(
        self, principal_key: str, route: str, kind: ContinuationKind, value: str, continuation: Continuation
    ) -> None:
        """See ``ContinuationStore.remember``."""
        record = json.dumps(
            {
                "origin": continuation.origin,
                "method": continuation.method,
                "target": continuation.target,
                "arguments": continuation.arguments,
                "expires": continuation.expires,
            },
            separators=(",", ":"),
        )
        pxat = int((continuation.expires + _GRACE_S) * 1000)
        await self._redis.set(self._key(principal_key, route, kind, value), record, pxat=pxat)

    async def find(
        self, principal_key: str, route: str, kind: ContinuationKind, value: str, *, now: float
    ) -> Continuation | None:
        """See ``ContinuationStore.find`` (an expired entry is forgotten)."""
        key = self._key(principal_key, route, kind, value)
        raw = await self._redis.get(key)
        if raw is None:
            return None
        fields = json.loads(raw)
        continuation = Continuation(
            origin=fields["origin"],
            method=fields["method"],
            target=fields["target"],
            arguments=fields["arguments"],
            expires=float(fields["expires"]),
        )
        if continuation.expires <= now:
            await self._forget(keys=[key], args=[raw])
            return None
        return continuation

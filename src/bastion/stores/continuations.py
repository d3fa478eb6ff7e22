"""What a principal may continue: multi round-trip request states and tasks issued to it.

MCP 2026-07-28 lets a call span several requests. A server answers a
``tools/call``, ``prompts/get`` or ``resources/read`` with an ``input_required``
result carrying an opaque ``requestState``, and the client retries the request
with that state and its answers (SEP-2322, "multi round-trip requests"); with the
tasks extension (``io.modelcontextprotocol/tasks``, SEP-2663) a ``tools/call``
returns a task id that ``tasks/get``, ``tasks/update`` and ``tasks/cancel`` then
name. The upstream mints both values; Bastion sees them in the results it relays
and records each one here, bound to the principal and route it was issued to and
to the call that started the chain.

A later request that presents a state or task id is forwarded only when this
ledger holds it for the same principal and route (``bastion.pipeline.stages.
continuation``); anything else is refused before the policy decision, so a state or
task id learnt elsewhere (another user's, a guessed one) never reaches the
upstream through Bastion, whose credential the upstream may share between users.
Every continuation is decided again by Cedar; the ledger only links it to the
first call in the audit log (``decision.continues``).

``ContinuationStore`` is the small interface; ``MemoryContinuationStore`` keeps
entries in this process, bounded in number and time. Like the sessions'
``RequestLedger`` it is per process: a state issued through one replica is
unknown to another (refused there, never let through).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "DEFAULT_STATE_TTL_S",
    "MAX_TASK_TTL_S",
    "Continuation",
    "ContinuationKind",
    "ContinuationStore",
    "MemoryContinuationStore",
]

ContinuationKind = Literal["state", "task"]
"""``state``: a ``requestState`` (SEP-2322); ``task``: a task id (SEP-2663)."""

DEFAULT_STATE_TTL_S = 3600.0
"""How long a ``requestState`` stays usable (seconds): a person answering a form may take a while."""

MAX_TASK_TTL_S = 86_400.0
"""The longest a task id stays usable (seconds), whatever ``ttlMs`` the upstream gives it."""


@dataclass(frozen=True, slots=True)
class Continuation:
    """The call a state or task id continues.

    ``origin`` is the ``decision_id`` of the first call of the chain (a retry of a retry
    keeps the first one's); ``method`` and ``target`` are that call's JSON-RPC method and
    tool name / resource URI / prompt name; ``arguments`` its ``tools/call`` arguments (a
    task's later requests are decided as calls of the same tool with the same arguments).
    ``expires`` is epoch seconds.
    """

    origin: str
    method: str
    target: str | None
    arguments: dict[str, Any] = field(default_factory=dict)
    expires: float = 0.0


class ContinuationStore(Protocol):
    """Continuations by (principal, route, kind, value)."""

    def remember(
        self, principal_key: str, route: str, kind: ContinuationKind, value: str, continuation: Continuation
    ) -> None:
        """Record that ``value`` was issued to ``principal_key`` on ``route``."""
        ...

    def find(self, principal_key: str, route: str, kind: ContinuationKind, value: str) -> Continuation | None:
        """The continuation recorded for exactly this principal, route, kind and value, unexpired, or ``None``."""
        ...


class MemoryContinuationStore:
    """``ContinuationStore`` in this process: at most ``max_entries`` (oldest forgotten first).

    Entries are keyed by the SHA-256 of principal, route, kind and value, so the values
    themselves (which can be long, and are the upstream's secrets) are not kept.
    """

    def __init__(self, *, max_entries: int = 100_000, clock: Any = time.time) -> None:
        self._entries: OrderedDict[bytes, Continuation] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    @staticmethod
    def _key(principal_key: str, route: str, kind: str, value: str) -> bytes:
        digest = hashlib.sha256()
        for part in (principal_key, route, kind, value):
            encoded = part.encode("utf-8", "surrogatepass")
            digest.update(len(encoded).to_bytes(8, "big"))
            digest.update(encoded)
        return digest.digest()

    def remember(
        self, principal_key: str, route: str, kind: ContinuationKind, value: str, continuation: Continuation
    ) -> None:
        """Record ``continuation`` (replacing one for the same key); forget the oldest past ``max_entries``."""
        key = self._key(principal_key, route, kind, value)
        self._entries[key] = continuation
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def find(self, principal_key: str, route: str, kind: ContinuationKind, value: str) -> Continuation | None:
        """The unexpired continuation for this key, or ``None`` (an expired one is forgotten)."""
        key = self._key(principal_key, route, kind, value)
        continuation = self._entries.get(key)
        if continuation is None:
            return None
        if continuation.expires <= self._clock():
            del self._entries[key]
            return None
        return continuation

    def __len__(self) -> int:
        return len(self._entries)

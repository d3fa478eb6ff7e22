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

``ContinuationStore`` is the small async interface; times are wall-clock epoch
seconds passed in by the caller (``now``), so that replicas sharing a backend
agree. The embedded backend is ``bastion.stores.memory_continuations.
MemoryContinuationStore``, in this process: a state issued through one replica is
then unknown to another (refused there, never let through). With ``stores.redis``
it is ``bastion.stores.redis_continuations.RedisContinuationStore``, shared by every
replica. Both run the contract suite (``tests/unit/stores/test_contract_continuations.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "DEFAULT_STATE_TTL_S",
    "MAX_TASK_TTL_S",
    "Continuation",
    "ContinuationKind",
    "ContinuationStore",
    "continuation_key",
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


def continuation_key(principal_key: str, route: str, kind: ContinuationKind, value: str) -> bytes:
    """The 32-byte key of a continuation: SHA-256 over the length-prefixed parts, so that a
    backend never keeps the values themselves (long, and the upstream's secrets)."""
    digest = hashlib.sha256()
    for part in (principal_key, route, kind, value):
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.digest()


class ContinuationStore(Protocol):
    """Continuations by (principal, route, kind, value)."""

    async def remember(
        self, principal_key: str, route: str, kind: ContinuationKind, value: str, continuation: Continuation
    ) -> None:
        """Record that ``value`` was issued to ``principal_key`` on ``route`` (replacing an earlier record)."""
        ...

    async def find(
        self, principal_key: str, route: str, kind: ContinuationKind, value: str, *, now: float
    ) -> Continuation | None:
        """The continuation recorded for exactly this principal, route, kind and value, if it has not
        expired at ``now``; else ``None``."""
        ...

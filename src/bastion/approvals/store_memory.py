"""Approval requests in this process's memory: for tests and one-off processes.

Atomic per call because no method awaits while it reads and writes (one event loop), so
two approvers deciding at once, or two calls racing for one grant, see exactly one
winner. Per process: another replica, or the next start, sees none of it; a deployment
keeps its requests in ``SQLiteApprovalStore``. Requests are immutable, so the store hands
out the stored value itself; a transition stores a new value.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Self, get_args

from bastion.approvals.model import ApprovalBinding, ApprovalRequest, ApprovalStats, ApprovalStatus

__all__ = ["MemoryApprovalStore"]


def _newest_first(request: ApprovalRequest) -> tuple[float, str]:
    return request.created_at, request.id


class MemoryApprovalStore:
    """``ApprovalStore`` in a dict keyed by id. Unbounded: ``expire`` marks, it never deletes.
    Not thread-safe: one instance per event loop."""

    def __init__(self) -> None:
        self._requests: dict[str, ApprovalRequest] = {}

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to release (the requests stay until the store is dropped)."""

    async def __aenter__(self) -> Self:
        """``start`` and return the store."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """``close``."""
        await self.close()

    async def create(self, request: ApprovalRequest) -> None:
        """See ``ApprovalStore.create``."""
        if request.id in self._requests:
            raise ValueError(f"approval {request.id!r} exists")
        self._requests[request.id] = request

    async def get(self, approval_id: str) -> ApprovalRequest | None:
        """See ``ApprovalStore.get``."""
        return self._requests.get(approval_id)

    async def find(self, binding: ApprovalBinding, now: float) -> ApprovalRequest | None:
        """See ``ApprovalStore.find``."""
        found = [r for r in self._requests.values() if r.binding == binding and r.live(now)]
        return max(found, key=_newest_first, default=None)

    async def decide(
        self,
        approval_id: str,
        *,
        approved: bool,
        approver: str,
        approver_key: str,
        reason: str,
        now: float,
        grant_ttl: float,
    ) -> ApprovalRequest | None:
        """See ``ApprovalStore.decide``."""
        request = self._requests.get(approval_id)
        if request is None or request.status != "pending" or now >= request.expires_at:
            return None
        decided = request.decided(
            approved=approved, approver=approver, approver_key=approver_key, reason=reason, now=now, grant_ttl=grant_ttl
        )
        self._requests[approval_id] = decided
        return decided

    async def consume(self, approval_id: str, *, decision_id: str, now: float) -> ApprovalRequest | None:
        """See ``ApprovalStore.consume``."""
        request = self._requests.get(approval_id)
        if request is None or request.status != "approved" or now >= request.expires_at:
            return None
        consumed = replace(request, status="consumed", consumed_at=now, consumed_by=decision_id)
        self._requests[approval_id] = consumed
        return consumed

    async def expire(self, now: float) -> list[ApprovalRequest]:
        """See ``ApprovalStore.expire``; oldest first."""
        due = sorted(
            (r for r in self._requests.values() if r.status in ("pending", "approved") and r.expires_at <= now),
            key=_newest_first,
        )
        expired = [replace(r, status="expired") for r in due]
        for request in expired:
            self._requests[request.id] = request
        return expired

    async def list(self, status: ApprovalStatus | None = None, *, limit: int = 100) -> list[ApprovalRequest]:
        """See ``ApprovalStore.list``; ties on ``created_at`` by id, descending. Raises ``ValueError``
        when ``limit`` is negative."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        chosen = (r for r in self._requests.values() if status is None or r.status == status)
        return sorted(chosen, key=_newest_first, reverse=True)[:limit]

    async def count(self, status: ApprovalStatus) -> int:
        """See ``ApprovalStore.count``."""
        return sum(1 for request in self._requests.values() if request.status == status)

    async def stats(self) -> ApprovalStats:
        """See ``ApprovalStore.stats``: every status counted (zero included)."""
        counts = dict.fromkeys(get_args(ApprovalStatus), 0)
        for request in self._requests.values():
            counts[request.status] += 1
        waits = [r.decided_at - r.created_at for r in self._requests.values() if r.decided_at is not None]
        return ApprovalStats(counts=counts, median_decision_s=statistics.median(waits) if waits else None)

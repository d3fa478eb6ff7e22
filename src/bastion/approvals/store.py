"""Where approval requests are kept: a small async protocol, so a shared backend can follow.

The embedded default is ``SQLiteApprovalStore`` (a table in Bastion's SQLite file, so
pending requests and grants survive a restart); ``PostgresApprovalStore``
(``approvals.store_postgres``, with ``stores.postgres``) is shared by every replica;
``MemoryApprovalStore`` serves tests and one-off processes. Every transition is atomic in
its store: two approvers deciding at once, or two calls racing for one grant, see exactly
one winner. The contract suite
(``tests/unit/stores/test_contract_approvals.py``) runs against every backend.
"""

from __future__ import annotations

from typing import Protocol

from bastion.approvals.model import ApprovalBinding, ApprovalRequest, ApprovalStats, ApprovalStatus

__all__ = ["ApprovalStore"]


class ApprovalStore(Protocol):
    """The approval requests of one Bastion deployment. Times are epoch seconds."""

    async def start(self) -> None:
        """Open the store (create tables); idempotent."""

    async def close(self) -> None:
        """Release the store's resources; idempotent."""

    async def create(self, request: ApprovalRequest) -> None:
        """Keep a new request. Raises ``ValueError`` when its id exists."""

    async def get(self, approval_id: str) -> ApprovalRequest | None:
        """The request with this id, whatever its status, or ``None``."""

    async def find(self, binding: ApprovalBinding, now: float) -> ApprovalRequest | None:
        """The newest request for exactly ``binding`` that is pending or approved and not
        expired at ``now``, or ``None``."""

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
        """Approve or deny a pending, unexpired request (``ApprovalRequest.decided``); returns
        the request as decided, or ``None`` when it is not pending or has expired (nothing changes)."""

    async def consume(self, approval_id: str, *, decision_id: str, now: float) -> ApprovalRequest | None:
        """Use an approved, unexpired grant once: it becomes ``consumed`` by the call whose decision
        record is ``decision_id``. Returns the consumed request, or ``None`` (not approved, used
        already, or expired: nothing changes)."""

    async def expire(self, now: float) -> list[ApprovalRequest]:
        """Mark every pending or approved request whose ``expires_at`` is at or before ``now``
        ``expired``; returns them as they are now (for their audit records)."""

    async def list(self, status: ApprovalStatus | None = None, *, limit: int = 100) -> list[ApprovalRequest]:
        """Requests, newest first, optionally only those with ``status`` (as stored: a request past
        its expiry that ``expire`` has not marked yet is still listed as it was)."""

    async def stats(self) -> ApprovalStats:
        """Counts by status and the median seconds from request to decision."""

    async def count(self, status: ApprovalStatus) -> int:
        """How many requests have ``status`` as stored (an index lookup: read at each metrics scrape)."""

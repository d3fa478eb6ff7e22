"""What an approval is: a request for a human decision on exactly one tool call, and its grant.

An approval request is created when a call is permitted by a policy annotated
``@approval("review")`` (another person approves) or ``@approval("confirm")`` (the
requesting person confirms out of band). It is bound to exactly one call
(``ApprovalBinding``): the requester (``Principal.key``: issuer and subject), the route,
the tool, the SHA-256 of the RFC 8785 canonical arguments (``bastion.audit.canonical``)
and the version of the policy set that asked for it. A call with any of these changed
needs a new approval.

Lifecycle (``status``)::

    pending --approve--> approved --consume (the call runs)--> consumed
       |                    |
       +--deny--> denied    +--(expires_at passes)--> expired
       +--(expires_at passes)--> expired

A pending request expires ``ttl`` after it was made; an approved one (the grant) ``ttl``
after it was approved. A grant is single use: consuming it is atomic in its store.
Times are epoch seconds (floats).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "APPROVAL_KINDS",
    "ApprovalBinding",
    "ApprovalKind",
    "ApprovalRequest",
    "ApprovalStats",
    "ApprovalStatus",
]

ApprovalKind = Literal["review", "confirm"]
ApprovalStatus = Literal["pending", "approved", "denied", "expired", "consumed"]

APPROVAL_KINDS: frozenset[str] = frozenset({"review", "confirm"})
"""The values of the ``@approval(...)`` policy annotation."""


@dataclass(frozen=True, slots=True)
class ApprovalBinding:
    """The one call an approval is for: ``requester`` is ``Principal.key``, ``arguments_sha256``
    the hex SHA-256 of the canonical arguments, ``policy_version`` ``PolicyEngine.version``."""

    requester: str
    route: str
    tool: str
    arguments_sha256: str
    policy_version: str


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """One approval request and, once decided, its decision.

    ``binding`` is the call it is for; ``kind`` who decides (``review``: another person,
    ``confirm``: the requester). What the approver is shown: ``requester_label`` (email or
    name), ``client_id``, ``arguments`` (as the audit log stores them: redacted), ``risk``,
    ``classification``, ``policy_ids`` (the policies that asked for it), ``decision_id`` (the
    audit record of the call that made the request). ``created_at``/``expires_at``/
    ``decided_at``/``consumed_at`` are epoch seconds; ``approver`` is the deciding person's
    label, ``approver_key`` their ``Principal.key``, ``reason`` their words.
    """

    id: str
    kind: ApprovalKind
    binding: ApprovalBinding
    requester_label: str
    client_id: str
    arguments: Any
    risk: str
    classification: str
    policy_ids: tuple[str, ...]
    decision_id: str
    created_at: float
    expires_at: float
    status: ApprovalStatus = "pending"
    decided_at: float | None = None
    approver: str | None = None
    approver_key: str | None = None
    reason: str = ""
    consumed_at: float | None = None
    consumed_by: str | None = None

    def decided(
        self, *, approved: bool, approver: str, approver_key: str, reason: str, now: float, grant_ttl: float
    ) -> ApprovalRequest:
        """This request approved (the grant lives ``grant_ttl`` seconds from ``now``) or denied."""
        if approved:
            return replace(self, status="approved", decided_at=now, approver=approver, approver_key=approver_key,
                           reason=reason, expires_at=now + grant_ttl)  # fmt: skip
        return replace(self, status="denied", decided_at=now, approver=approver, approver_key=approver_key,
                       reason=reason)  # fmt: skip

    def live(self, now: float) -> bool:
        """Pending or approved, and not past ``expires_at``."""
        return self.status in ("pending", "approved") and now < self.expires_at


@dataclass(frozen=True, slots=True)
class ApprovalStats:
    """Counts of requests by status and the median seconds from request to decision
    (``None`` when nothing was decided yet). For ``bastion approvals stats``."""

    counts: dict[str, int] = field(default_factory=dict)
    median_decision_s: float | None = None

"""Approvals: a human decision bound to exactly one tool call (docs/architecture.md, "Approvals")."""

from bastion.approvals.model import (
    APPROVAL_KINDS,
    ApprovalBinding,
    ApprovalKind,
    ApprovalRequest,
    ApprovalStats,
    ApprovalStatus,
)
from bastion.approvals.store import ApprovalStore

__all__ = [
    "APPROVAL_KINDS",
    "ApprovalBinding",
    "ApprovalKind",
    "ApprovalRequest",
    "ApprovalStats",
    "ApprovalStatus",
    "ApprovalStore",
]

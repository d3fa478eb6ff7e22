"""``approvals:``: how long a held call waits for a person, how long a grant lives, whom to tell.

    approvals:
      hold: 60s          # a call waiting for approval is held open this long (0: answer "pending" at once)
      ttl: 15m           # an undecided request, and a grant once approved, expire after this
      poll: 1s           # a held call re-reads its request this often (at least 10s while stores.redis
                         # notifications are subscribed: a decision on another replica wakes it at once)
      webhook:           # tell approvers (Slack-compatible JSON, HMAC-SHA256 signed)
        url: https://hooks.example/bastion
        secret: {env: BASTION_APPROVAL_WEBHOOK_SECRET}
        attempts: 3
        allow: []        # egress exceptions for a webhook on a private address (10.0.0.0/8, host:port)

Which calls need approval is policy (``@approval("review")`` / ``@approval("confirm")`` on a
permit), and who may approve (``Action::"approvals/decide"``); see docs/architecture.md,
"Approvals".
"""

from __future__ import annotations

from pydantic import Field, field_validator

from bastion.config.base import AllowEntries, SecretRef, _Model
from bastion.identity.durations import parse_duration

__all__ = ["ApprovalSettings", "WebhookSettings"]


def _seconds(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value  # ValueError: pydantic's error


class WebhookSettings(_Model):
    """Where new approval requests are announced: ``url`` (https),
    ``secret`` (a reference: the HMAC-SHA256 key), ``attempts`` per request, ``allow`` (egress
    allow list entries for a webhook on a private address)."""

    url: str
    secret: SecretRef
    attempts: int = Field(default=3, ge=1, le=10)
    allow: AllowEntries = ()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("the webhook url must be an https:// URL")
        return value


class ApprovalSettings(_Model):
    """``hold`` (seconds a call waits for a decision, 0 to 600), ``ttl`` (seconds a request stays
    open and a grant stays usable, up to 7 days), ``poll`` (seconds between a held call's reads of
    its request, 1 to 300; ``max(poll, 10)`` while the ``stores.redis`` "approval decided" channel is
    subscribed, see ``bastion.approvals.notices``), ``webhook`` (optional)."""

    hold: int = Field(default=60, ge=0, le=600)
    ttl: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    poll: int = Field(default=1, ge=1, le=300)
    webhook: WebhookSettings | None = None

    _parse = field_validator("hold", "ttl", "poll", mode="before")(_seconds)

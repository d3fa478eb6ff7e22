"""Stage 8, approve: a call whose permit asks for approval runs only on a grant for exactly that call.

A permit annotated ``@approval("review")`` or ``@approval("confirm")`` makes the decision carry
the obligation ``approval``. For such a call this stage asks the approval desk
(``bastion.approvals.desk``) for a grant bound to the principal, route, tool, the SHA-256 of the
RFC 8785 canonical arguments and the policy set's version:

- a grant approved before (the same call retried) is consumed, once, and the call goes on;
- otherwise the call is held for up to ``approvals.hold`` seconds while its request waits for
  a person. With a ``progressToken`` and an SSE-capable client, the runner streams
  ``notifications/progress`` (MCP 2025-11-25 basic/utilities/progress) while it waits; then:
  approved -> the grant is consumed and the call forwarded; still pending -> a tool execution
  error (``ApprovalPending``) naming the approval and its status page, so the model can tell
  the person and retry the same call; denied or expired -> a JSON-RPC error (``ApprovalRefused``)
  with the approval id and the approver's reason.

A continuation (an MCP 2026-07-28 ``requestState`` retry, a ``tasks/*`` request) of a call is
covered by that call's grant when it carries the same arguments: it was forwarded only after
the grant was consumed, and the continuation stage binds it to the same principal, route and
tool. Approvals apply to ``tools/call`` only; a permit asking one for another method denies.

A call that needs no approval costs one dictionary lookup here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from bastion.approvals.desk import ApprovalDesk, approval_record, rfc3339
from bastion.approvals.model import APPROVAL_KINDS, ApprovalBinding, ApprovalKind, ApprovalRequest
from bastion.audit.canonical import arguments_sha256
from bastion.audit.redact import redact
from bastion.errors import ApprovalPending, ApprovalRefused, PolicyDenied
from bastion.pipeline.context import Exchange

__all__ = ["ApproveStage", "Hold"]

PROGRESS_EVERY_S = 5.0
"""How often a held call with a ``progressToken`` is sent ``notifications/progress``."""


class ApproveStage:
    """Hold a call whose decision asks for approval until it has a grant (module docstring).

    ``desk`` keeps the requests; ``hold_s`` is ``approvals.hold``; ``policy_version`` the
    loaded policy set's (``PolicyEngine.version``); ``store_arguments`` whether approvers are
    shown the (redacted) arguments, as ``audit.store_arguments`` says for the log.
    """

    name = "approve"

    def __init__(
        self,
        desk: ApprovalDesk,
        *,
        hold_s: float,
        policy_version: str,
        store_arguments: bool = True,
        progress_every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        self._desk = desk
        self._hold_s = hold_s
        self._policy_version = policy_version
        self._store_arguments = store_arguments
        self._every = progress_every_s

    async def run(self, exchange: Exchange) -> None:
        """Consume a grant, or hold the call (``notes["hold"]`` for the runner to stream progress
        while it waits; else waiting here). Raises ``ApprovalPending``, ``ApprovalRefused`` or
        ``PolicyDenied``; sets ``notes["approval"]`` (the audit record's ``approval``)."""
        decision = exchange.decision
        if decision is None or not decision.allowed:
            return
        kind = decision.obligations.get("approval")
        if kind is None:
            return
        ids = list(decision.policy_ids)
        principal, resource = exchange.principal, exchange.resource
        if exchange.action != "tools/call" or principal is None or resource is None or kind not in APPROVAL_KINDS:
            raise PolicyDenied(
                f"Denied: policy {', '.join(ids)} asks for approval, which Bastion gives to tool calls only",
                data={"policies": ids},
            )
        arguments = exchange.notes.get("decide_arguments", exchange.params.get("arguments"))
        if not isinstance(arguments, dict):
            arguments = {}
        digest = arguments_sha256(arguments)
        if self._continues_approved_call(exchange, digest):
            return
        binding = ApprovalBinding(principal.key, exchange.route.name, exchange.target or "", digest,
                                  self._policy_version)  # fmt: skip
        request = await self._desk.admit(
            binding,
            kind=_kind(kind),
            principal=principal,
            arguments=redact(arguments)[0] if self._store_arguments else None,
            risk=str(resource.attrs.get("risk", "destructive")),
            classification=str(resource.attrs.get("classification", "")),
            policy_ids=decision.policy_ids,
            decision_id=exchange.decision_id,
        )
        exchange.notes["approval"] = approval_record(request)
        if request.status == "consumed":
            return
        hold = Hold(self._desk, request, exchange, hold_s=self._hold_s, every_s=self._every)
        if hold.progress_token is not None and exchange.accepts_sse and self._hold_s > 0:
            exchange.notes["hold"] = hold
            return
        await hold.settle()

    @staticmethod
    def _continues_approved_call(exchange: Exchange, digest: str) -> bool:
        if "continues" not in exchange.notes:
            return False
        original = exchange.notes.get("decide_arguments", exchange.notes.get("continues_arguments"))
        return isinstance(original, dict) and arguments_sha256(original) == digest


def _kind(value: str) -> ApprovalKind:
    return "confirm" if value == "confirm" else "review"


class Hold:
    """One call held for its approval request: ``settle`` waits, then consumes the grant or raises."""

    def __init__(
        self, desk: ApprovalDesk, request: ApprovalRequest, exchange: Exchange, *, hold_s: float, every_s: float
    ) -> None:
        self._desk = desk
        self.request = request
        self._exchange = exchange
        self._hold_s = hold_s
        self._every = every_s
        meta = exchange.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        self.progress_token: str | int | None = token if isinstance(token, str | int) else None

    async def settle(self) -> None:
        """Wait up to the hold for a decision. Approved: consume the grant (``notes["approval"]``
        updated) and return. Raises ``ApprovalPending`` (undecided), ``ApprovalRefused`` (denied,
        expired, or the grant used by another call meanwhile)."""
        exchange = self._exchange
        current = await self._desk.wait(self.request, self._hold_s)
        if current.status == "approved" and exchange.principal is not None:
            consumed = await self._desk.consume(current, decision_id=exchange.decision_id,
                                                principal=exchange.principal)  # fmt: skip
            if consumed is not None:
                exchange.notes["approval"] = approval_record(consumed)
                return
            current = await self._desk.store.get(current.id) or current
        exchange.notes["approval"] = approval_record(current)
        policies = list(current.policy_ids)
        if current.status == "pending":
            url = self._desk.status_url(current.id)
            raise ApprovalPending(
                f"This call needs approval ({'another person' if current.kind == 'review' else 'your confirmation'}"
                f"); approval {current.id} is pending until {rfc3339(current.expires_at)}. Its status shows at "
                f"{url}. Once it is approved, make exactly the same call again.",
                data={"approval": current.id, "status": "pending", "url": url,
                      "expires_at": int(current.expires_at), "policies": policies},
            )  # fmt: skip
        data: dict[str, Any] = {"approval": current.id, "status": current.status, "policies": policies}
        if current.status == "denied":
            data["approver"] = current.approver
            data["reason"] = current.reason
            said = f": {current.reason}" if current.reason else ""
            message = f"Approval {current.id} was denied by {current.approver}{said}"
        elif current.status == "expired":
            message = f"Approval {current.id} expired before it was used; make the call again to ask anew"
        else:
            message = f"Approval {current.id} was used by another call; make the call again to ask anew"
        raise ApprovalRefused(message, data=data)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """``notifications/progress`` messages for the held call, one now and one every few seconds,
        until ``settle`` ends; then raises what ``settle`` raised (if anything)."""
        waiting = asyncio.ensure_future(self.settle())
        url = self._desk.status_url(self.request.id)
        sent = 0
        try:
            while True:
                sent += 1
                yield {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {
                        "progressToken": self.progress_token,
                        "progress": sent,
                        "message": f"Waiting for approval {self.request.id} ({url})",
                    },
                }
                done, _ = await asyncio.wait({waiting}, timeout=self._every)
                if done:
                    break
        finally:
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
        waiting.result()

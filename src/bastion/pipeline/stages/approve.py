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

A ``confirm`` is not held (the requester must first see the page): the call is answered at once
with the carrier the client's protocol has for sending a person to a URL: on 2026-07-28 an
``InputRequiredResult`` whose URL-mode elicitation names Bastion's confirm page and whose
``requestState`` Bastion seals (``bastion.approvals.state``: HMAC, bound to the principal and
the argument digest, expiring, good once) and takes out again before forwarding the retry; on
2025-11-25 the URL elicitation required error (-32042); before that the pending tool error.
Never form-mode elicitation, which the client or the model could answer. The retry consumes the
grant the person's confirmation made.

A continuation (an MCP 2026-07-28 ``requestState`` retry, a ``tasks/*`` request) of a call is
covered by that call's grant when it carries the same arguments: it was forwarded only after
the grant was consumed, and the continuation stage binds it to the same principal, route and
tool. Approvals apply to ``tools/call`` only; a permit asking one for another method denies.

A call that needs no approval costs one dictionary lookup here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from bastion.approvals.desk import ApprovalDesk, approval_record, rfc3339
from bastion.approvals.model import APPROVAL_KINDS, ApprovalBinding, ApprovalKind, ApprovalRequest
from bastion.approvals.state import RequestStateSealer
from bastion.audit.canonical import arguments_sha256
from bastion.audit.redact import redact
from bastion.errors import ApprovalPending, ApprovalRefused, ConfirmationRequired, PolicyDenied, UnknownContinuation
from bastion.pipeline.context import Exchange

__all__ = ["ApproveStage", "Hold"]

PROGRESS_EVERY_S = 5.0
"""How often a held call with a ``progressToken`` is sent ``notifications/progress``."""


class ApproveStage:
    """Hold a call whose decision asks for approval until it has a grant (module docstring).

    ``desk`` keeps the requests; ``hold_s`` is ``approvals.hold``; ``policy_version`` the
    loaded policy set's (``PolicyEngine.version``, or a function answering it: a hot reload changes it;
    the version the authorize stage decided with, ``notes["policy_version"]``, comes first);
    ``store_arguments`` whether approvers are shown the (redacted) arguments, as
    ``audit.store_arguments`` says for the log.
    """

    name = "approve"

    def __init__(
        self,
        desk: ApprovalDesk,
        *,
        states: RequestStateSealer,
        hold_s: float,
        policy_version: str | Callable[[], str],
        store_arguments: bool = True,
        progress_every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        self._desk = desk
        self._states = states
        self._hold_s = hold_s
        self._policy_version = policy_version if callable(policy_version) else functools.partial(str, policy_version)
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
        state = exchange.notes.get("approval_state")
        if state is not None:  # a retry after a confirmation asked through a multi round-trip
            if self._states.open(state, principal_key=principal.key, arguments_sha256=digest) is None:
                raise UnknownContinuation(
                    "Invalid params: this requestState is not Bastion's for this call (expired, used, or "
                    "issued for other arguments or someone else); make the call again without it"
                )
            _drop_own_state(exchange)
        elif self._continues_approved_call(exchange, digest):
            return
        version = exchange.notes.get("policy_version") or self._policy_version()  # the deciding set's
        binding = ApprovalBinding(principal.key, exchange.route.name, exchange.target or "", digest, version)
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
        if request.kind == "confirm":  # the requester must see the page first: no hold
            raise self._confirm(exchange, request)
        hold = Hold(self._desk, request, exchange, hold_s=self._hold_s, every_s=self._every)
        if hold.progress_token is not None and exchange.accepts_sse and self._hold_s > 0:
            exchange.notes["hold"] = hold
            return
        await hold.settle()

    def _confirm(self, exchange: Exchange, request: ApprovalRequest) -> ApprovalPending | ConfirmationRequired:
        """The answer that sends the requester to the confirm page, in the carrier their protocol has:
        2026-07-28 an ``InputRequiredResult`` with a URL-mode elicitation and Bastion's sealed
        ``requestState``; 2025-11-25 the URL elicitation required error (-32042); older, the
        pending tool error naming the page."""
        url = self._desk.status_url(request.id)
        policies = list(request.policy_ids)
        message = (
            f"Confirm this call of {request.binding.tool} on Bastion's page ({url}); approval {request.id} "
            f"waits until {rfc3339(request.expires_at)}"
        )
        if exchange.era == "modern" and exchange.principal is not None:
            pending = _pending(request, url)
            # good while the request may still be confirmed and the grant then used
            state = self._states.seal(request.id, principal_key=exchange.principal.key,
                                      arguments_sha256=request.binding.arguments_sha256,
                                      expires_at=request.expires_at + self._desk.ttl)  # fmt: skip
            elicitation = {"mode": "url", "message": message, "url": url, "elicitationId": request.id}
            pending.result = {
                "resultType": "input_required",
                "inputRequests": {INPUT_KEY: {"method": "elicitation/create", "params": elicitation}},
                "requestState": state,
            }
            return pending
        if (exchange.protocol_version or "") >= URL_ELICITATION_VERSION:
            return ConfirmationRequired(message, url=url, approval_id=request.id, policies=policies)
        return _pending(request, url)

    @staticmethod
    def _continues_approved_call(exchange: Exchange, digest: str) -> bool:
        if "continues" not in exchange.notes:
            return False
        original = exchange.notes.get("decide_arguments", exchange.notes.get("continues_arguments"))
        return isinstance(original, dict) and arguments_sha256(original) == digest


INPUT_KEY = "bastion_confirmation"
"""The ``inputRequests`` key of Bastion's own confirmation request (MCP 2026-07-28 mrtr)."""

URL_ELICITATION_VERSION = "2025-11-25"
"""The first protocol version with URL-mode elicitation and its -32042 error."""


def _drop_own_state(exchange: Exchange) -> None:
    """Take Bastion's ``requestState`` and its ``inputResponses`` entry out of the request (they are
    Bastion's, never the upstream's) and re-serialise the body that is forwarded."""
    params = exchange.params
    params.pop("requestState", None)
    responses = params.get("inputResponses")
    if isinstance(responses, dict):
        responses.pop(INPUT_KEY, None)
        if not responses:
            params.pop("inputResponses")
    exchange.http = replace(exchange.http, body=json.dumps(exchange.message).encode())


def _pending(request: ApprovalRequest, url: str) -> ApprovalPending:
    """The tool error saying that ``request`` waits for a person, with its page ``url``."""
    who = "another person's approval" if request.kind == "review" else "your confirmation"
    return ApprovalPending(
        f"This call needs {who}; approval {request.id} is pending until {rfc3339(request.expires_at)}. Its "
        f"status shows at {url}. Once it is approved, make exactly the same call again.",
        data={"approval": request.id, "status": "pending", "url": url,
              "expires_at": int(request.expires_at), "policies": list(request.policy_ids)},
    )  # fmt: skip


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
            raise _pending(current, self._desk.status_url(current.id))
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

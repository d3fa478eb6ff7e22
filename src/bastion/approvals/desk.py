"""The approval desk: asks for approvals, waits for them, lets people decide, records every step.

One ``ApprovalDesk`` per gateway. The approve stage (``bastion.pipeline.stages.approve``)
calls ``admit`` for a call that a policy annotated ``@approval(...)`` permitted:

- an approved grant for exactly this call (``ApprovalBinding``) is consumed, once, and the
  call goes on;
- otherwise the pending request for it (or a new one) is returned and the stage holds the
  call (``wait``) until it is decided, expires, or the hold ends.

People decide with ``decide`` (the portal's inbox and API; ``bastion approvals approve``
goes through the API of the running gateway, so this process stays the audit log's only
writer). A decision wakes the calls held on it in this process at once; with ``stores.redis``
it is also announced to the other replicas (``bastion.approvals.notices``), whose held calls
wake at once too. Otherwise a held call re-reads its request every ``poll_s`` seconds.

Who may decide: for a ``review``, a person other than the requester whom policy
allows (``Action::"approvals/decide"`` on the ``Approval`` entity, deny by default); for a
``confirm``, only the requester. The requester never reviews their own call, whatever the
policies say.

Every step is a record in the audit chain (method ``approval/<step>``): ``requested``,
``notified`` (each webhook attempt), ``approved`` / ``denied`` (by whom, with the reason),
``refused`` (a decision someone was not allowed to make), ``consumed`` (by which call:
``decision_id``), ``expired``. Each carries the approval (``approval`` field: id, kind,
status, approver, reason, time, the call's ``arguments_sha256``), the route, the tool as
``target`` and the call's argument digest as ``arguments_sha256``, so a search goes from a
call to the person who approved it and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from bastion.approvals.model import ApprovalBinding, ApprovalKind, ApprovalRequest
from bastion.approvals.notices import SUBSCRIBED_POLL_S, DecisionNotices
from bastion.approvals.store import ApprovalStore
from bastion.audit.build import decision_body
from bastion.audit.store import AuditLog
from bastion.errors import DecisionRefused
from bastion.ids import new_id
from bastion.policy import PolicyEngine
from bastion.principal import Principal

__all__ = ["MAX_REASON_CHARS", "ApprovalDesk", "approval_record", "rfc3339"]

logger = logging.getLogger(__name__)

MAX_REASON_CHARS = 500
"""An approver's reason is kept to this many characters."""

_SWEEP_S = 5.0
"""How often expired requests are marked (and recorded)."""

Step = Literal["requested", "approved", "denied", "refused", "consumed", "expired", "notified"]


def rfc3339(epoch_s: float | None) -> str | None:
    """``epoch_s`` as RFC 3339 UTC with microseconds (the audit record's time form), or ``None``."""
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def approval_record(request: ApprovalRequest) -> dict[str, Any]:
    """The audit record's ``approval`` field for ``request`` as it is now."""
    return {
        "id": request.id,
        "kind": request.kind,
        "status": request.status,
        "approver": request.approver,
        "reason": request.reason or None,
        "time": rfc3339(request.decided_at),
        "arguments_sha256": request.binding.arguments_sha256,
    }


class ApprovalDesk:
    """Approval requests over ``store``, recorded in ``log``, decided under ``engine``'s policy.

    ``ttl`` (seconds) is how long a request stays open and a grant usable; ``status_url(id)``
    the page where a request's status shows; ``notify(request)`` (optional) announces a new
    request (the webhook; it must not block); ``clock`` returns epoch seconds; ``poll_s`` is
    how often a held call re-reads its request (decisions made in this process wake it at once);
    ``closing`` (the gateway's shutdown event) ends every wait, so held calls are answered
    "pending" before the server stops. ``notices`` (with ``stores.redis``) announces this desk's
    decisions to the other replicas and wakes held calls on theirs; while it is subscribed a held
    call re-reads every ``max(poll_s, SUBSCRIBED_POLL_S)`` seconds instead.

    ``on_decided(request)`` (optional, the metrics) is called with each request this desk approved
    or denied, as decided; it must not raise or block.
    """

    def __init__(
        self,
        *,
        store: ApprovalStore,
        log: AuditLog,
        engine: PolicyEngine,
        ttl: float,
        status_url: Callable[[str], str],
        notify: Callable[[ApprovalRequest], None] | None = None,
        clock: Callable[[], float] = time.time,
        poll_s: float = 1.0,
        closing: asyncio.Event | None = None,
        notices: DecisionNotices | None = None,
        on_decided: Callable[[ApprovalRequest], None] | None = None,
    ) -> None:
        self.store = store
        self._log = log
        self._engine = engine
        self.ttl = ttl
        self.status_url = status_url
        self.notify = notify
        self._clock = clock
        self._poll_s = poll_s
        self._closing = closing
        self.notices = notices
        self.on_decided = on_decided
        self._wakeups: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Open the store, start marking expired requests every few seconds and, with ``notices``,
        listening for the other replicas' decisions."""
        await self.store.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._sweep()))
        if self.notices is not None:
            self._tasks.append(loop.create_task(self.notices.listen(self.wake, lambda _: self.wake_all())))

    async def close(self) -> None:
        """Stop the sweeper and the listener, then close the notices and the store."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.notices is not None:
            await self.notices.aclose()
        await self.store.close()

    def wake(self, approval_id: str) -> None:
        """Make the calls held on ``approval_id`` in this process re-read it now (nothing when none is)."""
        wakeup = self._wakeups.get(approval_id)
        if wakeup is not None:
            wakeup.set()

    def wake_all(self) -> None:
        """Make every held call re-read its request now (the notices' subscription came or went)."""
        for wakeup in self._wakeups.values():
            wakeup.set()

    def _poll_interval(self) -> float:
        """Seconds between a held call's reads when nothing wakes it (longer while subscribed)."""
        if self.notices is not None and self.notices.subscribed:
            return max(self._poll_s, SUBSCRIBED_POLL_S)
        return self._poll_s

    # the requesting call
    async def admit(
        self,
        binding: ApprovalBinding,
        *,
        kind: ApprovalKind,
        principal: Principal,
        arguments: Any,
        risk: str,
        classification: str,
        policy_ids: tuple[str, ...],
        decision_id: str,
    ) -> ApprovalRequest:
        """The consumed grant for this call (``status == "consumed"``), or its pending request
        (found, or created, recorded and announced). Raises ``AuditUnavailable`` when a step
        cannot be recorded durably (the call is then refused)."""
        now = self._clock()
        found = await self.store.find(binding, now)
        if found is not None and found.status == "approved":
            consumed = await self.consume(found, decision_id=decision_id, principal=principal)
            if consumed is not None:
                return consumed
            found = await self.store.find(binding, now)  # another call took it first
        if found is not None and found.status == "pending" and found.kind == kind:
            return found
        request = ApprovalRequest(
            id=new_id(),
            kind=kind,
            binding=binding,
            requester_label=principal.email or principal.name or principal.sub,
            client_id=principal.client_id or "",
            arguments=arguments,
            risk=risk,
            classification=classification,
            policy_ids=policy_ids,
            decision_id=decision_id,
            created_at=now,
            expires_at=now + self.ttl,
        )
        await self.store.create(request)
        await self._record("requested", request, principal)
        if self.notify is not None:
            try:
                self.notify(request)
            except Exception:
                logger.exception("announcing approval %s failed", request.id)
        return request

    async def wait(self, request: ApprovalRequest, timeout_s: float) -> ApprovalRequest:
        """Wait up to ``timeout_s`` seconds for ``request`` to leave ``pending``; returns it as it
        is then (still ``pending`` when the wait ended first, ``expired`` once past its expiry)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        wakeup = self._wakeups.setdefault(request.id, asyncio.Event())
        try:
            while True:
                current = await self.store.get(request.id) or request
                if current.status != "pending":
                    return current
                if self._clock() >= current.expires_at:
                    return await self._expire_one(current)
                left = deadline - loop.time()
                if left <= 0 or (self._closing is not None and self._closing.is_set()):
                    return current
                wakeup.clear()
                pause = min(self._poll_interval(), left, max(0.0, current.expires_at - self._clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), pause)
        finally:  # a second call held on the same request still polls
            self._wakeups.pop(request.id, None)

    async def consume(
        self, request: ApprovalRequest, *, decision_id: str, principal: Principal
    ) -> ApprovalRequest | None:
        """Use the grant ``request`` once for the call recorded as ``decision_id``; ``None`` when it
        is no longer usable (used, expired). Records ``approval/consumed``."""
        consumed = await self.store.consume(request.id, decision_id=decision_id, now=self._clock())
        if consumed is not None:
            await self._record("consumed", consumed, principal, decision_id=decision_id)
        return consumed

    # people deciding
    async def decide(self, approval_id: str, *, approver: Principal, approve: bool, reason: str) -> ApprovalRequest:
        """Approve or deny request ``approval_id`` as ``approver``, with ``reason`` (kept to
        ``MAX_REASON_CHARS``). Returns the decided request. Raises ``DecisionRefused`` (recorded
        as ``approval/refused``) when the request does not exist, is not pending any more, is the
        approver's own review, someone else's confirmation, or policy does not allow it."""
        reason = " ".join(reason.split())[:MAX_REASON_CHARS]
        now = self._clock()
        request = await self.store.get(approval_id)
        if request is None:
            raise DecisionRefused(f"No approval request {approval_id}", status=404, reason="unknown_approval")
        refusal = self._refusal(approver, request, now)
        if refusal is not None:
            http_status, code, message = refusal
            await self._record("refused", request, approver, refused=code)
            raise DecisionRefused(message, status=http_status, reason=code)
        label = approver.email or approver.name or approver.sub
        decided = await self.store.decide(
            approval_id, approved=approve, approver=label, approver_key=approver.key, reason=reason,
            now=now, grant_ttl=self.ttl,
        )  # fmt: skip
        if decided is None:  # decided or expired in the meantime
            await self._record("refused", request, approver, refused="not_pending")
            raise DecisionRefused(f"Approval {approval_id} was decided or expired meanwhile", status=409,
                                  reason="not_pending")  # fmt: skip
        await self._record("approved" if approve else "denied", decided, approver)
        self.wake(approval_id)
        if self.notices is not None:
            self.notices.publish(approval_id)
        if self.on_decided is not None:
            try:
                self.on_decided(decided)
            except Exception:  # reporting never changes the decision
                logger.exception("reporting the decision of approval %s failed", approval_id)
        return decided

    def is_requester(self, person: Principal, request: ApprovalRequest) -> bool:
        """Whether ``person`` made the call ``request`` is for: the same ``Principal.key``, or the
        same email (one person signed in through two issuers is still one person)."""
        if person.key == request.binding.requester:
            return True
        return bool(person.email) and (person.email or "").casefold() == request.requester_label.casefold()

    def may_decide(self, person: Principal, request: ApprovalRequest) -> bool:
        """Whether ``person`` may decide ``request`` now (the rule of ``decide``; nothing recorded)."""
        return self._refusal(person, request, self._clock()) is None

    def may_see(self, person: Principal, request: ApprovalRequest) -> bool:
        """Whether ``person`` may see ``request`` in the portal: its requester, whoever decided it,
        and whoever policy lets decide requests like it (whatever its status now)."""
        if self.is_requester(person, request) or person.key == request.approver_key:
            return True
        return request.kind == "review" and self._engine.decide_approver(person, request, now=self._clock()).allowed

    def _refusal(self, approver: Principal, request: ApprovalRequest, now: float) -> tuple[int, str, str] | None:
        """``(HTTP status, audit code, message)`` of why ``approver`` may not decide, or ``None``."""
        own = self.is_requester(approver, request)
        if request.status != "pending" or now >= request.expires_at:
            shown = request.status if request.status != "pending" else "expired"
            return 409, "not_pending", f"Approval {request.id} is {shown}; nothing to decide"
        if request.kind == "review" and own:
            return 403, "own_request", "You cannot approve or deny your own request; another person must"
        if request.kind == "confirm" and not own:
            return 403, "not_requester", "Only the person who made this call can confirm it"
        if request.kind == "review" and not self._engine.decide_approver(approver, request, now=now).allowed:
            return 403, "policy_denied", "No policy allows you to decide this approval"
        return None

    async def record_refused_form(self, approval_id: str, person: Principal | None) -> None:
        """Record a decision form that did not come from Bastion's pages (a forged or cross-site
        POST; ``person`` is ``None`` when it came without the sign-in cookie) as
        ``approval/refused`` with ``refused: form`` (never raises)."""
        try:
            request = await self.store.get(approval_id)
            if request is not None:
                await self._record("refused", request, person, refused="form")
        except Exception:
            logger.exception("recording a refused approval form failed")

    async def record_notified(self, request: ApprovalRequest, *, delivered: bool, attempt: int, detail: str) -> None:
        """Record one webhook attempt for ``request`` (never raises)."""
        try:
            await self._record("notified", request, None, delivered=delivered, attempt=attempt, detail=detail[:200])
        except Exception:
            logger.exception("recording a webhook attempt for approval %s failed", request.id)

    # housekeeping
    async def expire_due(self) -> list[ApprovalRequest]:
        """Mark and record every request past its expiry; returns them."""
        expired = await self.store.expire(self._clock())
        for request in expired:
            await self._record("expired", request, None)
            self.wake(request.id)
        return expired

    async def _expire_one(self, request: ApprovalRequest) -> ApprovalRequest:
        await self.expire_due()
        return await self.store.get(request.id) or request

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            try:
                await self.expire_due()
            except Exception as exc:  # noqa: BLE001 - housekeeping; retried on the next sweep
                logger.warning("expiring approval requests failed: %s", exc)

    async def _record(
        self,
        step: Step,
        request: ApprovalRequest,
        principal: Principal | None,
        *,
        decision_id: str | None = None,
        **detail: Any,
    ) -> None:
        """Commit the record of one step (durably: raises ``AuditUnavailable`` when it cannot)."""
        refused = step == "refused"
        binding = request.binding
        body = decision_body(
            route=binding.route,
            method=f"approval/{step}",
            effect="deny" if refused else "allow",
            policy_ids=request.policy_ids,
            obligations={"approval": request.kind},
            reason=detail.get("refused") if refused else None,
            policy_version=binding.policy_version,
            arguments=detail,
            principal=principal,
            target=binding.tool,
            session=None,
            decision_id=decision_id or request.decision_id,
            approval=approval_record(request),
        )
        body["arguments_sha256"] = binding.arguments_sha256
        await self._log.append(body)

"""Stages 9 and 13, audit: the decision record before forwarding, the outcome after.

``run`` (stage 9) commits the decision record durably and only then lets the
request go on; if the audit store cannot write, the request is refused with
``AuditUnavailable`` (503) and nothing is forwarded. ``record_denied`` writes
the record of a request that ended before forwarding (bad input, no token,
unknown session, policy deny); ``record_outcome`` (stage 13) the upstream's
answer. Both are queued and committed within milliseconds: no later step
waits for them, and the store flushes them on shutdown.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from bastion import audit
from bastion.audit.build import decision_body, outcome_body
from bastion.errors import AuditUnavailable
from bastion.pipeline.context import Exchange
from bastion.policy import Decision

__all__ = ["MAX_DROP_RECORDS", "AuditStage"]

logger = logging.getLogger(__name__)

MAX_DROP_RECORDS = 16
"""How many dropped upstream messages one exchange records one by one (see ``record_dropped``)."""


class AuditStage:
    """Writes the audit records of one route's exchanges to ``log``.

    ``policy_version`` is the running policy set's version, or a function answering it (a hot
    reload changes it); a decision's record carries the version the authorize stage decided
    with (``notes["policy_version"]``) when it set one.
    """

    name = "audit"

    def __init__(
        self, log: audit.AuditLog, *, policy_version: str | Callable[[], str], store_arguments: bool = True
    ) -> None:
        self._log = log
        self._policy_version = policy_version if callable(policy_version) else functools.partial(str, policy_version)
        self._store_arguments = store_arguments

    def _body(self, exchange: Exchange) -> dict[str, Any]:
        decision = exchange.decision
        error = exchange.error
        denied = error is not None or decision is None or decision.effect != "allow"
        sizes = exchange.notes.get("argument_sizes")  # over server.argument_limits: digest and sizes only
        return decision_body(
            route=exchange.route.name,
            method=exchange.method or exchange.notes.get("label") or exchange.kind or "invalid",
            effect="deny" if denied else "allow",
            policy_ids=decision.policy_ids if decision else (),
            obligations=decision.obligations if decision else {},
            reason=(error.code if error is not None else "policy_denied") if denied else None,
            policy_version=exchange.notes.get("policy_version") or self._policy_version(),
            # tools/call arguments are recorded; over a limit, the digest of whatever arguments were refused.
            arguments=exchange.params.get("arguments", {}) if exchange.method == "tools/call" or sizes else {},
            principal=exchange.principal,
            target=exchange.target,
            session=exchange.session.id if exchange.session else None,
            decision_id=exchange.decision_id,
            store_arguments=self._store_arguments and sizes is None,
            argument_sizes=sizes,
            continues=exchange.notes.get("continues"),
            approval=exchange.notes.get("approval"),
            shadow=exchange.notes.get("shadow"),
            trace_id=exchange.notes.get("trace_id"),  # the request's W3C trace id (bastion.tracing; else none)
        )

    async def run(self, exchange: Exchange) -> None:
        """Commit the decision record; raise ``AuditUnavailable`` if it cannot be made durable.

        Only a request recorded here (and so about to be forwarded) later gets an outcome record.
        """
        try:
            body = self._body(exchange)
        except (ValueError, TypeError, RecursionError) as exc:
            raise AuditUnavailable("the audit record could not be built") from exc
        await self._log.append(body)
        exchange.notes["audit_event"] = body
        exchange.audited = True

    async def record_denied(self, exchange: Exchange) -> None:
        """Queue the record of a request that was not forwarded (never raises).

        Its effect is ``allow`` only when the exchange carries an allowing decision and no
        error (a GET stream or DELETE that went through), else ``deny``.
        """
        try:
            self._log.append_nowait(self._body(exchange))
            exchange.audited = True
        except Exception:
            logger.exception("could not queue the audit record of a denied request")

    def _message_body(
        self, exchange: Exchange, *, method: str, target: str | None, decision: Decision | None, reason: str | None
    ) -> dict[str, Any]:
        """A decision record about one message on the exchange's stream (no arguments stored):
        ``decision`` names its policies, or ``None`` for a deny no policy made."""
        allowed = decision is not None and decision.allowed
        return decision_body(
            route=exchange.route.name,
            method=method[:200],
            effect="allow" if allowed else "deny",
            policy_ids=decision.policy_ids if decision else (),
            obligations=decision.obligations if decision else {},
            reason=None if allowed else reason,
            policy_version=self._policy_version(),
            arguments={},
            principal=exchange.principal,
            target=target,
            session=exchange.session.id if exchange.session else None,
            decision_id=exchange.decision_id,
            store_arguments=False,
        )

    async def record_server_request(self, exchange: Exchange, method: str, decision: Decision) -> None:
        """Commit the decision record of a server-to-client request (``sampling/createMessage``, ...).

        ``target`` is the call that caused it (the exchange's target), the session and principal
        the caller's. Raises ``AuditUnavailable`` when the record cannot be made durable: the
        request is then refused, like a call.
        """
        try:
            body = self._message_body(
                exchange, method=method, target=exchange.target, decision=decision, reason="policy_denied"
            )
        except (ValueError, TypeError) as exc:
            raise AuditUnavailable("the audit record could not be built") from exc
        await self._log.append(body)

    async def record_dropped(self, exchange: Exchange, message: dict[str, Any] | None, reason: str) -> None:
        """Queue the record of an upstream-to-client message that was not relayed (never raises).

        A deny record on the exchange's decision id: ``method`` is the dropped message's
        method (``response`` for a response, ``message`` when it was not a JSON-RPC
        object), ``target`` its JSON-RPC id, ``reason`` the filter's code (e.g.
        ``unsolicited_response``, ``filtered:list``).

        At most ``MAX_DROP_RECORDS`` per exchange are written, so an upstream that floods a
        stream with messages Bastion drops cannot grow the log without bound; the one after
        them is recorded with the reason ``drops_capped``, later ones only counted
        (``exchange.notes["dropped"]``).
        """
        dropped = exchange.notes["dropped"] = exchange.notes.get("dropped", 0) + 1
        if dropped > MAX_DROP_RECORDS + 1:
            return
        if dropped == MAX_DROP_RECORDS + 1:
            message, reason = None, "drops_capped"
        method = "message"
        target: str | None = None
        if message is not None:
            name = message.get("method")
            method = name if isinstance(name, str) else "response"
            target = None if message.get("id") is None else str(message.get("id"))[:200]
        try:
            body = self._message_body(exchange, method=method, target=target, decision=None, reason=reason)
            self._log.append_nowait(body)
        except Exception:
            logger.exception("could not queue the audit record of a dropped message")

    async def record_outcome(self, exchange: Exchange) -> None:
        """Queue the outcome record of a forwarded request (never raises)."""
        body = exchange.notes.get("audit_event")
        if not isinstance(body, dict):
            return
        error = exchange.error
        try:
            self._log.append_nowait(
                outcome_body(
                    body,
                    error=exchange.result_error or error is not None,
                    error_code=error.code if error is not None else None,
                    request_bytes=len(exchange.http.body),
                    response_bytes=exchange.response_bytes,
                    credential_kind=exchange.credential_kind,
                    credential_principal=exchange.credential_principal,
                    status=exchange.upstream_status,
                    duration_ms=round((time.perf_counter() - exchange.started) * 1000, 3),
                    flags=exchange.notes.get("flags", ()),
                    volume=exchange.notes.get("volume"),  # an anomalous tool result's (stages/volume.py)
                    redacted=exchange.notes.get("redacted"),  # values redacted, by rule (stages/redact.py)
                    injection=exchange.notes.get("injection"),  # instructions aimed at the model (stages/redact.py)
                )
            )
        except Exception:
            logger.exception("could not queue the outcome audit record")

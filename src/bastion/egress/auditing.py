"""Audit records of the egress guard's refusals: one ``decision`` record per refused connection.

The record sits in the same hash chain as calls (``bastion.audit``): ``method``
``"egress/connect"``, ``route`` ``"-"`` (a refusal is not tied to a route's call;
``purpose`` says what it was for), ``target`` the refused URL as shown (no user
info, query or fragment), ``decision.effect`` ``"deny"`` with ``decision.reason``
``"egress_denied"`` (``EgressDenied.code``), and ``arguments``
``{"url", "purpose", "reason", "hop"}`` (see ``Refusal``), redacted like any
arguments. Written with ``AuditLog.append`` (durable); when it fails the guard
logs it and refuses all the same (``bastion.egress.refusals.report``).
"""

from __future__ import annotations

from bastion.audit.build import decision_body
from bastion.audit.store import AuditLog
from bastion.egress.refusals import Refusal, RefusalHook
from bastion.errors import EgressDenied
from bastion.ids import new_id

__all__ = ["METHOD", "audit_refusals"]

#: The ``method`` of an egress refusal record.
METHOD = "egress/connect"


def audit_refusals(log: AuditLog) -> RefusalHook:
    """The ``on_refusal`` hook of an ``EgressGuard`` that writes each refusal to ``log``.

    The hook raises ``AuditUnavailable`` when the log cannot commit the record (the guard
    logs it; the connection stays refused).
    """

    async def record(refusal: Refusal) -> None:
        arguments = {"url": refusal.url, "purpose": refusal.purpose, "reason": refusal.reason, "hop": refusal.hop}
        body = decision_body(
            route="-",
            method=METHOD,
            effect="deny",
            policy_ids=(),
            obligations={},
            reason=EgressDenied.code,
            policy_version=None,
            arguments=arguments,
            principal=None,
            target=refusal.url,
            session=None,
            decision_id=new_id(),
        )
        await log.append(body)

    return record

"""Audit events for tests of the audit store: decision and outcome factories, and a small log's worth."""

from __future__ import annotations

from typing import Literal

from bastion.audit.record import Decision, DecisionEvent, OutcomeEvent, Result, Upstream
from bastion.audit.store import AuditLog
from bastion.principal import Principal

__all__ = ["decision", "fill_six", "outcome", "principal"]


def principal(sub: str) -> Principal:
    """A user principal named ``sub`` in group ``eng``."""
    return Principal(kind="User", sub=sub, issuer="https://bastion.test", auth_method="bastion_jwt",
                     expires_at=2_000_000_000, groups=("eng",))  # fmt: skip


def decision(
    n: int = 0,
    *,
    sub: str = "alice",
    route: str = "github",
    tool: str = "create_issue",
    effect: Literal["allow", "deny"] = "allow",
) -> DecisionEvent:
    """A tools/call decision event; a deny carries reason ``policy_denied``."""
    reason = "policy_denied" if effect == "deny" else None
    return DecisionEvent.create(
        route=route, method="tools/call", target=tool, principal=principal(sub),
        arguments={"n": n, "token": "ghp_" + "x" * 36}, session="s-1",
        decision=Decision(effect=effect, policy_ids=("p1",), reason=reason),
    )  # fmt: skip


def outcome(event: DecisionEvent) -> OutcomeEvent:
    """The successful outcome of ``event``."""
    return event.outcome(
        result=Result(error=False, request_bytes=100, response_bytes=2048),
        upstream=Upstream(credential_kind="oauth_user", status=200, duration_ms=12.5),
    )


async def fill_six(log: AuditLog) -> None:
    """Append six events to the open ``log``: alice allow + its outcome and bob deny on github;
    carol allow twice and alice deny on jira (seq 1 to 6)."""
    first = decision(1)
    await log.append(first)
    log.append_nowait(outcome(first))
    await log.append(decision(2, sub="bob", effect="deny"))
    await log.append(decision(3, sub="carol", route="jira", tool="create_ticket"))
    await log.append(decision(4, sub="carol", route="jira", tool="create_ticket"))
    await log.append(decision(5, route="jira", tool="delete_project", effect="deny"))

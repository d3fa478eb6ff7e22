"""What the portal's activity page shows: a person's recent calls, read from the audit log.

    GET /portal/activity?route=&tool=&effect=&subject=

A call is the ``decision`` record of a ``tools/call``, ``resources/read`` or ``prompts/get``
(``CALL_METHODS``) with the ``outcome`` record of the same ``decision_id``; the newest
``ACTIVITY_LIMIT`` that match are shown, newest first. A person sees their own calls: the
records whose principal has their subject and Bastion's issuer (the identity the portal
signs them in as). An auditor, whom policy lets ``Action::"audit/search"`` the
``AuditLog::"bastion"`` (``PolicyEngine.may_search_audit``), sees everyone's, or one
person's with ``subject``; anyone else's ``subject`` is ignored.

Filters come from the query string and are validated here (``activity_filters``): ``route``
must name a route, ``effect`` be ``allow`` or ``deny``, ``tool`` and ``subject`` be short
printable text; anything else is ignored, and every value reaches SQLite as a bound
parameter (``ActivityReader.calls``: SQLite or PostgreSQL). The page itself is ``Portal.activity``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.audit.store import ActivityReader, EventFilter

__all__ = ["ACTIVITY_LIMIT", "CALL_METHODS", "ActivityFilters", "ActivityLog", "activity_filters", "call_view"]

CALL_METHODS = ("tools/call", "resources/read", "prompts/get")
"""The methods whose decisions the activity page lists: the calls a person makes of an upstream."""

ACTIVITY_LIMIT = 100
"""At most this many calls on the page."""

_TEXT_LIMIT = 200


@dataclass(frozen=True, slots=True)
class ActivityFilters:
    """The accepted filters: ``None`` is "any". ``subject`` is set only for an auditor."""

    route: str | None = None
    tool: str | None = None
    effect: str | None = None
    subject: str | None = None


def _text(value: str | None) -> str | None:
    """``value`` stripped when it is short printable text, else ``None`` (ignored)."""
    if value is None:
        return None
    value = value.strip()
    return value if value and len(value) <= _TEXT_LIMIT and value.isprintable() else None


def activity_filters(params: Mapping[str, str], *, routes: Collection[str], auditor: bool) -> ActivityFilters:
    """The filters of query ``params`` that are valid (rule in the module docstring); ``routes`` are
    the route names, ``auditor`` whether ``subject`` is taken at all."""
    route = params.get("route")
    effect = params.get("effect")
    return ActivityFilters(
        route=route if route in routes else None,
        tool=_text(params.get("tool")),
        effect=effect if effect in ("allow", "deny") else None,
        subject=_text(params.get("subject")) if auditor else None,
    )


def _utc(stamp: Any) -> str:
    """An RFC 3339 record time (``2026-05-09T07:35:25.123456Z``) as ``2026-05-09 07:35:25 UTC``."""
    text = str(stamp or "")
    return f"{text[:10]} {text[11:19]} UTC" if len(text) >= 19 else text


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def call_view(decision: Mapping[str, Any], outcome: Mapping[str, Any] | None) -> dict[str, Any]:
    """One call as the page shows it: ``time`` (UTC text), ``subject`` / ``who`` (the caller's
    subject and email or subject), ``client_id``, ``route``, ``method``, ``target``, ``effect``,
    ``policy_ids``, ``reason`` (a deny's code), ``approval_id`` / ``approval_status`` /
    ``approver`` (``None`` without an approval), and ``outcome``: ``"ok"``, ``"error"`` or
    ``"error: <code>"``, or ``None`` when there is no outcome record (a deny, a call running or
    cut short)."""
    principal = _mapping(decision.get("principal"))
    verdict = _mapping(decision.get("decision"))
    approval = _mapping(decision.get("approval"))
    shown = None
    if outcome is not None:
        result = _mapping(outcome.get("result"))
        code = result.get("error_code")
        shown = ("error: " + str(code) if code else "error") if result.get("error") else "ok"
    return {
        "time": _utc(decision.get("time")),
        "subject": principal.get("sub"),
        "who": principal.get("email") or principal.get("sub") or "unauthenticated",
        "client_id": principal.get("client_id"),
        "route": decision.get("route"),
        "method": decision.get("method"),
        "target": decision.get("target"),
        "effect": verdict.get("effect"),
        "policy_ids": [str(p) for p in verdict.get("policy_ids") or ()],
        "reason": verdict.get("reason"),
        "approval_id": approval.get("id"),
        "approval_status": approval.get("status"),
        "approver": approval.get("approver"),
        "outcome": shown,
    }


class ActivityLog:
    """The calls in the audit log at ``reader``; ``issuer`` is Bastion's (whose people the portal shows)."""

    def __init__(self, reader: ActivityReader, *, issuer: str) -> None:
        self._reader = reader
        self._issuer = issuer

    async def calls(self, sub: str, filters: ActivityFilters, *, auditor: bool) -> list[dict[str, Any]]:
        """The newest ``ACTIVITY_LIMIT`` calls matching ``filters`` (``call_view`` each), newest first:
        those of person ``sub`` (of Bastion's issuer), or, for an ``auditor``, of ``filters.subject``
        (any issuer) or of everyone when it is ``None``. Reads in a worker thread. Raises
        ``FileNotFoundError`` when there is no embedded audit database, the backend's error when the log
        cannot be read."""
        if auditor:
            subject, issuer = filters.subject, None
        else:
            subject, issuer = sub, self._issuer
        wanted = EventFilter(
            subject=subject, route=filters.route, tool=filters.tool,
            decision="allow" if filters.effect == "allow" else "deny" if filters.effect == "deny" else None,
            limit=ACTIVITY_LIMIT,
        )  # fmt: skip
        found = await asyncio.to_thread(self._reader.calls, CALL_METHODS, wanted, issuer=issuer)
        return [call_view(decision, outcome) for decision, outcome in found]

"""Stage 5, authorize: the Cedar decision for the classified message.

Deny by default, ``forbid`` beats ``permit`` (Cedar semantics, in
``bastion.policy``). A denied request ends here with a JSON-RPC error whose
``data`` names only the deciding policy ids (docs/architecture.md, "Policy model").
"""

from __future__ import annotations

import math
import time
from typing import Any

from bastion.config.routes import ToolSettings
from bastion.errors import InsufficientScope, LimitsUnavailable, PolicyDenied, clip
from bastion.limits.activity import SessionActivity
from bastion.pipeline.context import Exchange
from bastion.policy import Decision, PolicyEngine

__all__ = ["SESSION_DECISION", "AuthorizeStage", "policy_context", "requested_records", "shadow_difference"]

SESSION_DECISION = Decision(effect="allow", policy_ids=("bastion:session-method",), obligations={}, errors=())
"""The built-in decision for session plumbing that touches no tool (see ``SESSION_METHODS``)."""

CEDAR_ACTIONS = frozenset({"tools/call", "resources/read", "prompts/get"})
_LONG_MAX = 2**63 - 1


def policy_context(
    exchange: Exchange, arguments: Any = None, session_labels: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The Cedar ``context`` record: arguments, client_id, session, time, ip, approved,
    session_labels, records, bulk (docs/architecture.md, "Policy model")."""
    principal = exchange.principal
    arguments = arguments if isinstance(arguments, dict) else {}
    context = {
        "arguments": arguments,
        "scopes": list(principal.scopes) if principal else [],
        "client_id": (principal.client_id if principal else None) or "",
        "session": exchange.session.id if exchange.session else "",
        "time": int(time.time()),
        "ip": exchange.http.client_ip or "",
        "approved": False,
        "session_labels": sorted(session_labels),
    }
    tool = exchange.route.settings.tools.get(exchange.target or "") if exchange.action == "tools/call" else None
    if tool is not None and tool.record_arguments:
        records = requested_records(arguments, tool)
        context["records"] = records
        context["bulk"] = tool.max_records is not None and records > tool.max_records
    return context


def requested_records(arguments: dict[str, Any], tool: ToolSettings) -> int:
    """How many records a call asks for: the largest value among the tool's ``record_arguments``
    present in ``arguments`` (a JSON number, rounded up, or a string of digits; a number too big
    for a Cedar ``Long`` counts as its largest value), 0 when none is given, negative or not a
    number."""
    largest = 0
    for name in tool.record_arguments:
        value = arguments.get(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, float):
            value = math.ceil(value) if math.isfinite(value) else (_LONG_MAX if value > 0 else 0)
        if isinstance(value, int):
            largest = max(largest, min(value, _LONG_MAX))
    return largest


def shadow_difference(enforced: Decision, shadow: Decision) -> dict[str, Any] | None:
    """What the shadow policy set (``policy.shadow_files``) would have decided, when that differs from
    the enforced decision in effect, deciding policies or obligations: ``{"effect", "policy_ids",
    "obligations", "errors"}`` for the decision record's ``decision.shadow``; ``None`` when alike."""
    if (enforced.effect, enforced.policy_ids, dict(enforced.obligations)) == (
        shadow.effect, shadow.policy_ids, dict(shadow.obligations)
    ):  # fmt: skip
        return None
    return {"effect": shadow.effect, "policy_ids": list(shadow.policy_ids),
            "obligations": dict(shadow.obligations), "errors": list(shadow.errors)}  # fmt: skip


class AuthorizeStage:
    """Ask the policy engine; raise ``PolicyDenied`` on deny. With a ``shadow`` engine (the shadow
    policy set), ask it too and note any difference for the decision record (never enforced).
    With ``activity`` tracking labels, the caller's labels so far are ``context.session_labels``
    (a store that cannot answer denies: ``LimitsUnavailable``)."""

    name = "authorize"

    def __init__(
        self, engine: PolicyEngine, shadow: PolicyEngine | None = None, activity: SessionActivity | None = None
    ) -> None:
        self._engine = engine
        self._shadow = shadow
        self._activity = activity if activity is not None and activity.track_labels else None

    async def run(self, exchange: Exchange) -> None:
        """Set ``exchange.decision``; raise ``PolicyDenied`` with ``data={"policies": [...]}`` on deny."""
        if exchange.action is None:
            exchange.decision = SESSION_DECISION
            return
        if exchange.action not in CEDAR_ACTIONS or exchange.resource is None or exchange.principal is None:
            exchange.decision = Decision(effect="deny", policy_ids=(), obligations={}, errors=())
            raise PolicyDenied(
                f"Denied: {clip(exchange.method or '')} is not a method Bastion forwards", data={"policies": []}
            )
        arguments = None
        if exchange.action == "tools/call":  # a task request is decided on the arguments of the call that made it
            arguments = exchange.notes.get("decide_arguments", exchange.params.get("arguments"))
        labels: frozenset[str] = frozenset()
        if self._activity is not None:
            try:
                labels = await self._activity.session_labels(exchange)
            except Exception as exc:
                raise LimitsUnavailable("Refused: the session's data-flow labels cannot be read now") from exc
        context = policy_context(exchange, arguments, labels)
        decision = self._engine.decide(exchange.principal, exchange.action, exchange.resource, context)
        exchange.decision = decision
        exchange.notes["policy_version"] = self._engine.version  # the set that decided (a reload may follow)
        if self._shadow is not None:
            differs = shadow_difference(decision, self._shadow.decide(exchange.principal, exchange.action,
                                                                     exchange.resource, context))  # fmt: skip
            if differs is not None:
                exchange.notes["shadow"] = differs
        if decision.effect != "allow":
            ids = list(decision.policy_ids)
            message = f"Denied by policy {', '.join(ids)}" if ids else "Denied: no policy permits this request"
            needed = decision.obligations.get("scope")
            if needed and not decision.errors:
                granted = exchange.principal.scopes
                raise InsufficientScope(
                    f"{message}: the token needs scope {needed}",
                    scope=" ".join(dict.fromkeys([*granted, *needed.split()])),
                    data={"policies": ids},
                )
            denied = PolicyDenied(message, data={"policies": ids})
            # route option denials: tool_error: the model sees why (hosts drop a JSON-RPC error's data)
            denied.as_tool_result = exchange.route.settings.denials == "tool_error"
            raise denied

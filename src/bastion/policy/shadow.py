"""What a shadow policy set would have changed: the summary behind ``bastion policy diff``.

With ``policy.shadow_files`` configured, every decision record where the shadow set would have
decided otherwise carries ``decision.shadow`` (``bastion.pipeline.stages.authorize``). ``summarise``
reads those records: how many decisions there were, how many the shadow set would have changed,
the changes by kind (``allow -> deny``, ``deny -> allow``, or the same effect with other deciding
policies or obligations), the policies involved on each side, and a few examples of each kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ShadowSummary", "summarise"]

EXAMPLES_PER_KIND = 3
"""How many example decisions the summary keeps of each kind of change."""


@dataclass
class ShadowSummary:
    """``decisions``: decision records of calls read; ``changed``: those the shadow set would have
    decided otherwise; ``kinds``: changes by ``"<enforced> -> <shadow>"`` effect (``"allow ->
    allow"`` for other policies or obligations); ``enforced_policies`` / ``shadow_policies``: how
    often each policy id decided a changed decision, on each side; ``examples``: per kind, up to
    ``EXAMPLES_PER_KIND`` of ``{time, subject, route, target, enforced, shadow}``."""

    decisions: int = 0
    changed: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    enforced_policies: Counter[str] = field(default_factory=Counter)
    shadow_policies: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        return {
            "decisions": self.decisions,
            "changed": self.changed,
            "kinds": dict(self.kinds.most_common()),
            "enforced_policies": dict(self.enforced_policies.most_common()),
            "shadow_policies": dict(self.shadow_policies.most_common()),
            "examples": self.examples,
        }


_CALLS = frozenset({"tools/call", "resources/read", "prompts/get"})


def summarise(records: Iterable[Mapping[str, Any]]) -> ShadowSummary:
    """Summarise the decision records of calls among ``records`` (any audit records; others are
    skipped). Never raises on a malformed record: it is skipped."""
    summary = ShadowSummary()
    for record in records:
        decision = record.get("decision")
        if record.get("kind") != "decision" or record.get("method") not in _CALLS or not isinstance(decision, dict):
            continue
        summary.decisions += 1
        shadow = decision.get("shadow")
        if not isinstance(shadow, dict):
            continue
        summary.changed += 1
        kind = f"{decision.get('effect')} -> {shadow.get('effect')}"
        summary.kinds[kind] += 1
        enforced_ids = [str(p) for p in decision.get("policy_ids") or ()]
        shadow_ids = [str(p) for p in shadow.get("policy_ids") or ()]
        summary.enforced_policies.update(enforced_ids or ["(default deny)"])
        summary.shadow_policies.update(shadow_ids or ["(default deny)"])
        examples = summary.examples.setdefault(kind, [])
        if len(examples) < EXAMPLES_PER_KIND:
            principal = record.get("principal") or {}
            examples.append({
                "time": record.get("time"),
                "subject": principal.get("sub") if isinstance(principal, dict) else None,
                "route": record.get("route"),
                "target": record.get("target"),
                "enforced": enforced_ids,
                "shadow": shadow_ids,
            })  # fmt: skip
    return summary

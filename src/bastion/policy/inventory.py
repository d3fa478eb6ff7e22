"""A route's tool inventory: the one place a tool's Cedar resource is built (``ToolInventory``).

What the upstream says about a tool (its MCP ``Tool`` definition and annotations) is merged
with what the route's configuration says (``routes[].tools``: ``risk``, ``owner``,
``classification``, ``labels``) by one rule, so a listing and a call always judge a tool
alike: a configured risk wins; else the annotations decide when the route sets
``trust_annotations: true``; else the tool is ``destructive`` (fail closed, since
annotations are hints from a server Bastion does not trust). A tool the upstream does not
list is judged the same way without annotations: ``destructive`` unless configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.policy.model import ResourceRef, Risk

__all__ = ["ToolFacts", "ToolInventory"]


@dataclass(frozen=True, slots=True)
class ToolFacts:
    """What the configuration says about one tool; ``risk`` ``None`` leaves it to the rule above."""

    risk: Risk | None = None
    owner: str = ""
    classification: str = ""
    labels: frozenset[str] = frozenset()


_UNKNOWN = ToolFacts()


@dataclass(frozen=True, slots=True)
class ToolInventory:
    """Route ``route``'s configured tools (``tools``, by name) and whether it trusts annotations."""

    route: str
    trust_annotations: bool = False
    tools: Mapping[str, ToolFacts] = field(default_factory=dict)

    def facts(self, name: str) -> ToolFacts:
        """What the configuration says about tool ``name`` (nothing: an empty ``ToolFacts``)."""
        return self.tools.get(name, _UNKNOWN)

    def ref(self, definition: Mapping[str, Any]) -> ResourceRef:
        """The Cedar resource of a tool the upstream lists (its MCP ``Tool`` definition).

        Raises ``ValueError`` when the definition has no non-empty string ``name``.
        """
        return self._build(definition, trust_annotations=self.trust_annotations)

    def unlisted(self, name: str) -> ResourceRef:
        """The Cedar resource of tool ``name``, which the upstream does not list (no annotations to
        trust): ``destructive`` unless configured. Raises ``ValueError`` for an empty name."""
        return self._build({"name": name}, trust_annotations=False)

    def _build(self, definition: Mapping[str, Any], *, trust_annotations: bool) -> ResourceRef:
        name = definition.get("name")
        facts = self.facts(name) if isinstance(name, str) else _UNKNOWN
        return ResourceRef.from_tool(
            self.route,
            definition,
            trust_annotations=trust_annotations,
            risk=facts.risk,
            owner=facts.owner,
            classification=facts.classification,
            labels=facts.labels,
        )

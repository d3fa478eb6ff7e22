"""``routes[].definitions:``: pinning the route's definitions, and what a scanner finding does.

Issue 15 (docs/architecture.md, "Pinning and quarantine")::

    routes:
      - name: github
        definitions:
          pin: admin                  # admin (default) | first_use | strict | off
          pinned: [tool, prompt, resource_template]   # the kinds pinned (resources: see below)
          on_finding: {high: hide, medium: warn, low: warn}   # warn | hide | block

``pin``, who pins the definitions (tools, prompts, resources, resource templates) the upstream
lists, by the SHA-256 of their canonical JSON:

- ``admin``: an administrator, with ``bastion tools approve --route R`` or in the portal. Until
  the route's first approval its definitions are served as listed (and scanned) and each is kept
  for review (``bastion tools diff``); from the first approval on (of the whole route: every kind;
  of some definitions: their kinds), a definition that differs from its pin, or that has no pin,
  is quarantined: hidden from lists, its calls refused, until an administrator approves it. The
  default: a route starts serving as it did before pinning existed, and the rug-pull defence
  starts with the first ``approve``.
- ``first_use``: the first definitions seen are pinned automatically (trust on first use, as SSH
  host keys), per kind, until a complete listing of that kind was seen; after that, as ``admin``.
- ``strict``: nothing is served before an administrator approved it (every definition without a
  pin is quarantined, from the start).
- ``off``: nothing is pinned or quarantined (findings still apply).

``pinned``: the kinds pinned. Resources are left out by default: a resource list is data (files,
rows, each with its size and modification time), so pinning it would quarantine every change of
the data; resource templates, tools and prompts are what the server declares.

``on_finding``, per severity of the definition scanner's findings (``bastion.scan``): ``warn`` (an
audit record only), ``hide`` (the item is removed from lists and its calls refused, until an
administrator approves that exact definition), ``block`` (the whole route refuses every request
until an administrator approves). The worst action of a definition's findings applies.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bastion.config.base import _Model
from bastion.scan.findings import DefinitionKind, Severity

__all__ = ["DefinitionSettings", "FindingAction", "FindingActions", "PinMode"]

PinMode = Literal["admin", "first_use", "strict", "off"]
"""Who pins a route's definitions (see the module docstring)."""

FindingAction = Literal["warn", "hide", "block"]
"""What a scanner finding does: an audit record, the item hidden, or the whole route blocked."""

_ACTION_ORDER: tuple[FindingAction, ...] = ("warn", "hide", "block")


class FindingActions(_Model):
    """``on_finding``: the action of a finding, by its severity."""

    high: FindingAction = "hide"
    medium: FindingAction = "warn"
    low: FindingAction = "warn"

    def of(self, severity: Severity) -> FindingAction:
        """The action of a finding of ``severity``."""
        action: FindingAction = getattr(self, severity)
        return action

    def worst(self, severities: list[Severity]) -> FindingAction | None:
        """The worst action among findings of ``severities`` (``None`` for none)."""
        actions = [self.of(severity) for severity in severities]
        return max(actions, key=_ACTION_ORDER.index) if actions else None


class DefinitionSettings(_Model):
    """``routes[].definitions`` (see the module docstring)."""

    pin: PinMode = "admin"
    pinned: tuple[DefinitionKind, ...] = Field(default=("tool", "prompt", "resource_template"))
    on_finding: FindingActions = Field(default_factory=FindingActions)

    def pins(self, kind: DefinitionKind) -> bool:
        """Whether definitions of ``kind`` are pinned on the route."""
        return self.pin != "off" and kind in self.pinned

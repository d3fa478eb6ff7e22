"""A route's held definitions as an administrator reviews them: the same view for the CLI and the portal.

``review(pins, held)`` pairs each held definition with its pin and the diff between them
(``bastion.catalog.diff``); ``as_json`` is the JSON of ``bastion tools diff --json`` and of the
portal's API; ``shown_digest`` binds an approval to exactly the definitions a person was shown
(the portal's form carries it, so a definition that changed after the page was rendered is not
approved by that form).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bastion.catalog.diff import DefinitionDiff, definition_diff
from bastion.catalog.pins import HeldDefinition, Pin, PinnedItem

__all__ = ["ReviewItem", "as_json", "review", "shown_digest"]


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """One held definition (``held``), its pin (``pin``, ``None`` when new) and what differs (``diff``)."""

    held: HeldDefinition
    pin: Pin | None
    diff: DefinitionDiff

    @property
    def item(self) -> PinnedItem:
        """``(kind, name, sha256)`` of the held definition: what approving it pins."""
        return self.held.kind, self.held.name, self.held.sha256


def _parsed(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text}
    return value if isinstance(value, dict) else {"value": value}


def review(pins: Sequence[Pin], held: Sequence[HeldDefinition]) -> list[ReviewItem]:
    """The held definitions, in the store's order, each with its pin and its diff."""
    by_key = {(pin.kind, pin.name): pin for pin in pins}
    items = []
    for item in held:
        pin = by_key.get((item.kind, item.name))
        before = _parsed(pin.definition) if pin is not None else None
        items.append(ReviewItem(item, pin, definition_diff(before, _parsed(item.definition))))
    return items


def as_json(item: ReviewItem) -> dict[str, Any]:
    """``item`` as a JSON object: the held definition (``definition`` parsed), why it is held, whether
    it is served meanwhile, its findings, the pin it differs from, and the diff (``text``: member →
    ``[[op, text], ...]``; ``changes``: ``[{"path", "op", "before", "after"}]``)."""
    held, pin = item.held, item.pin
    return {
        "route": held.route,
        "kind": held.kind,
        "name": held.name,
        "sha256": held.sha256,
        "reason": held.reason,
        "action": held.action or None,
        "served": held.served,
        "findings": list(held.findings),
        "first_seen": held.first_seen,
        "last_seen": held.last_seen,
        "definition": _parsed(held.definition),
        "pinned": None
        if pin is None
        else {"sha256": pin.sha256, "approver": pin.approver, "reviewed": pin.reviewed, "pinned_at": pin.pinned_at},
        "diff": {
            "text": {member: [list(op) for op in ops] for member, ops in item.diff.text.items()},
            "changes": [{"path": c.path, "op": c.op, "before": c.before, "after": c.after} for c in item.diff.changes],
        },
    }


def shown_digest(items: Sequence[PinnedItem]) -> str:
    """SHA-256 (hex) of the definitions ``items`` as a set: what a review page showed."""
    lines = sorted(f"{kind}\x1f{name}\x1f{sha256}" for kind, name, sha256 in items)
    return hashlib.sha256("\x1e".join(lines).encode()).hexdigest()

"""A finding: what a detector saw in a definition or a result, where, and how bad it is.

Every detector of issue 15 (definition scanning, result inspection, ``bastion scan``) reports
``Finding`` values, so the request path, the audit records and the outputs (table, JSON,
SARIF 2.1.0) handle one shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["SEVERITIES", "DefinitionKind", "Finding", "Severity", "at_least"]

Severity = Literal["low", "medium", "high"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high")
"""The severities, least first."""

DefinitionKind = Literal["tool", "prompt", "resource", "resource_template"]
"""What an MCP definition is (MCP 2025-11-25 server/tools ``Tool``, server/prompts ``Prompt``,
server/resources ``Resource`` and ``ResourceTemplate``)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One detector's finding.

    ``rule``: the detector's stable id (``hidden-instruction``, ``invisible-unicode`` ...);
    ``severity``; ``message``: the explanation a person reads; ``path``: where, as a JSON
    pointer (RFC 6901) into the definition or result (``/inputSchema/properties/notes/default``);
    ``excerpt``: the offending text, clipped, with invisible characters shown as ``\\u{...}``
    (never a secret's value).
    """

    rule: str
    severity: Severity
    message: str
    path: str = ""
    excerpt: str = ""


def at_least(severity: Severity, floor: Severity) -> bool:
    """Whether ``severity`` is ``floor`` or worse."""
    return SEVERITIES.index(severity) >= SEVERITIES.index(floor)

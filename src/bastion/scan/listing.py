"""Lists of definitions: reading them from a file and scanning them together.

``parse_definitions`` accepts what ``bastion scan --definitions`` is given: a JSON array of MCP
``Tool`` objects, JSON lines of them, a saved ``tools/list`` result (``{"tools": [...]}``, also
with ``prompts``, ``resources`` and ``resourceTemplates`` lists), or a whole JSON-RPC response
whose ``result`` is one. ``scan_definitions`` scans each definition with the names of the other
tools as ``others``, so a tool that steers or impersonates a sibling is seen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.scan.definitions import scan_definition
from bastion.scan.findings import DefinitionKind
from bastion.scan.report import ScanResult

__all__ = ["ListedDefinition", "parse_definitions", "scan_definitions"]

_LISTS: tuple[tuple[str, DefinitionKind], ...] = (
    ("tools", "tool"), ("prompts", "prompt"), ("resources", "resource"), ("resourceTemplates", "resource_template"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ListedDefinition:
    """One definition of a list: its kind, its JSON, its pointer in the source, and its server."""

    kind: DefinitionKind
    definition: Mapping[str, Any]
    pointer: str
    server: str = ""

    @property
    def name(self) -> str:
        """The definition's name (its URI for a nameless resource)."""
        for key in ("name", "uri", "uriTemplate"):
            value = self.definition.get(key)
            if isinstance(value, str):
                return value
        return ""


def _kind_of(item: Mapping[str, Any]) -> DefinitionKind:
    if "inputSchema" in item:
        return "tool"
    if "uriTemplate" in item:
        return "resource_template"
    if "uri" in item:
        return "resource"
    if "arguments" in item:
        return "prompt"
    return "tool"


def parse_definitions(text: str) -> list[ListedDefinition]:
    """The definitions in ``text`` (see the module docstring). Raises ``ValueError`` (saying why) for another shape."""
    if not text.strip():
        raise ValueError("the file is empty")
    try:
        data: Any = json.loads(text)
    except ValueError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise ValueError(f"neither JSON nor JSON lines: {exc}") from None
    if isinstance(data, Mapping) and isinstance(data.get("result"), Mapping):
        data = data["result"]
    if isinstance(data, Mapping) and any(isinstance(data.get(key), list) for key, _ in _LISTS):
        listed = []
        for key, kind in _LISTS:
            items = data.get(key)
            if isinstance(items, list):
                listed += [ListedDefinition(kind, item, f"/{key}/{i}") for i, item in enumerate(items)
                           if isinstance(item, Mapping)]  # fmt: skip
        return listed
    if isinstance(data, Mapping) and "name" in data:
        return [ListedDefinition(_kind_of(data), data, "")]
    if isinstance(data, list):
        if not all(isinstance(item, Mapping) for item in data):
            raise ValueError("a list of definitions must hold JSON objects only")
        return [ListedDefinition(_kind_of(item), item, f"/{i}") for i, item in enumerate(data)]
    raise ValueError("expected a JSON array (or JSON lines) of Tool objects, or a tools/list result")


def scan_definitions(definitions: Sequence[ListedDefinition], *, source: str,
                     extra_names: Iterable[str] = ()) -> list[ScanResult]:  # fmt: skip
    """Scan each definition; ``others`` for each tool is every other tool's name in
    ``definitions`` plus ``extra_names`` (tools known from elsewhere)."""
    tool_names = [d.name if d.kind == "tool" else "" for d in definitions]
    names = [n for n in tool_names if n]
    extra = list(extra_names)
    results: list[ScanResult] = []
    for i, item in enumerate(definitions):
        others = [n for j, n in enumerate(tool_names) if j != i and n] + extra
        if item.kind != "tool":
            others = names + extra
        for finding in scan_definition(item.kind, item.definition, others=others):
            results.append(ScanResult(finding, source, item.server, item.kind, item.name, item.pointer))
    return results

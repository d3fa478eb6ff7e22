"""The outputs of ``bastion scan``: one ``ScanResult`` per finding, as JSON or SARIF 2.1.0.

SARIF (OASIS Static Analysis Results Interchange Format 2.1.0): one run whose driver is
``bastion-scan`` with one reporting descriptor per rule seen; each result has the rule, the level
(``error`` for high, ``warning`` for medium, ``note`` for low), the message, the file it concerns
(a client configuration or a definitions file, with the line where the server or definition is
named when it can be found) and a logical location (``server/tool``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastion.scan.findings import Finding

__all__ = ["RULES", "ScanResult", "to_sarif"]

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_LEVELS = {"high": "error", "medium": "warning", "low": "note"}
RULES: dict[str, str] = {
    "hidden-instruction": "Instructions hidden in a definition and addressed to the model",
    "sensitive-reference": "A definition that reaches for private data (keys, credential files, the model's context)",
    "exfiltration": "A definition that moves data into arguments, answers or outside addresses",
    "tool-shadowing": "A definition that impersonates or steers another tool",
    "invisible-unicode": "Invisible Unicode (tag characters, zero-width and format characters, controls)",
    "bidi-control": "Bidirectional control characters that reorder what a person sees",
    "confusable": "Words mixing scripts with look-alike letters",
    "ansi-escape": "Terminal escape sequences",
    "encoded-payload": "Text hidden in an encoding (base64, hex, percent-encoding)",
    "abnormal-length": "A definition or string far larger than a tool needs",
    "schema-poisoning": "Instructions in a schema's property names or values",
    "command-payload": "A shell payload (piped download, reverse shell, destructive command)",
    "hardcoded-secret": "A credential written as a value where a reference belongs",
    "unprotected-server": "An MCP server reached without Bastion",
    "malformed-definition": "A definition that could not be read",
}


@dataclass(frozen=True, slots=True)
class ScanResult:
    """One finding with where it was found: ``source`` (the file scanned or the configuration that
    names the server), ``server``, the definition's ``kind`` and ``definition`` name, and
    ``pointer`` (the definition's or the server entry's JSON pointer in ``source``)."""

    finding: Finding
    source: str
    server: str = ""
    kind: str = ""
    definition: str = ""
    pointer: str = ""

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON object (the finding's fields at the top level)."""
        data = asdict(self.finding)
        data.update(source=self.source, server=self.server, kind=self.kind, definition=self.definition,
                    pointer=self.pointer)  # fmt: skip
        return data


def _line_of(source: str, needles: Sequence[str], cache: dict[str, list[str]]) -> int | None:
    """The first line of ``source`` holding the last needle found, searching needle by needle
    from the previous match (a server's name, then its key); None when unknown."""
    if source not in cache:
        try:
            cache[source] = Path(source).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            cache[source] = []
    lines = cache[source]
    start, found = 0, None
    for needle in needles:
        if not needle:
            continue
        quoted = json.dumps(needle)
        for i in range(start, len(lines)):
            if quoted in lines[i]:
                start = found = i
                break
    return None if found is None else found + 1


def _needles(result: ScanResult) -> list[str]:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in result.pointer.split("/")[1:]]
    tail = [t.replace("~1", "/").replace("~0", "~") for t in result.finding.path.split("/")[1:]]
    names = [t for t in tokens if not t.isdigit() and t not in ("mcpServers", "servers", "context_servers", "mcp")]
    return [*names, result.definition, *[t for t in tail[:2] if not t.isdigit()]]


def to_sarif(results: Iterable[ScanResult], *, version: str = "0.1.0") -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run holding ``results``."""
    results = list(results)
    rule_ids = sorted({r.finding.rule for r in results})
    cache: dict[str, list[str]] = {}
    sarif_results = []
    for result in results:
        location: dict[str, Any] = {}
        if result.source and not result.source.startswith(("http://", "https://", "<")):
            physical: dict[str, Any] = {"artifactLocation": {"uri": Path(result.source).resolve().as_uri()}}
            line = _line_of(result.source, _needles(result), cache)
            if line is not None:
                physical["region"] = {"startLine": line}
            location["physicalLocation"] = physical
        name = "/".join(n for n in (result.server, result.definition) if n)
        if name:
            location["logicalLocations"] = [{"name": result.definition or result.server, "fullyQualifiedName": name,
                                             "kind": "function" if result.definition else "module"}]  # fmt: skip
        entry: dict[str, Any] = {
            "ruleId": result.finding.rule,
            "ruleIndex": rule_ids.index(result.finding.rule),
            "level": _LEVELS[result.finding.severity],
            "message": {"text": _message(result)},
            "properties": {
                "severity": result.finding.severity,
                "jsonPointer": result.finding.path,
                "excerpt": result.finding.excerpt,
                "kind": result.kind,
            },
        }
        if location:
            entry["locations"] = [location]
        sarif_results.append(entry)
    rules = [{"id": rule, "name": re.sub(r"(?:^|-)(\w)", lambda m: m.group(1).upper(), rule),
              "shortDescription": {"text": RULES.get(rule, rule)},
              "defaultConfiguration": {"level": "warning"}} for rule in rule_ids]  # fmt: skip
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "bastion-scan", "version": version, "rules": rules}},
                  "results": sarif_results}],
    }  # fmt: skip


def _message(result: ScanResult) -> str:
    where = "/".join(n for n in (result.server, result.definition) if n)
    text = f"{where}: {result.finding.message}" if where else result.finding.message
    if result.finding.path:
        text += f" (at {result.finding.path})"
    return text

"""The labelled corpus of MCP definitions under ``tests/data/scan`` (see its README), and the
detection figures ``bastion.scan.definitions.scan_definition`` reaches on it.

Sets: ``reference`` (the official reference servers' own ``tools/list`` results, all benign),
``third-party`` (definitions extracted from deliberately vulnerable MCP servers, labelled by hand),
``authored`` (attack techniques and hard benign cases written for Bastion, kept apart because
they were written while the detectors were), ``community`` (popular third-party servers' real
``tools/list`` results, all benign).

A definition counts as detected when it has at least one high finding; ``others`` is the names
of the other tools of the same source file (one server's list).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.scan.definitions import scan_definition
from bastion.scan.findings import DefinitionKind, Finding

__all__ = ["DATA", "Figures", "Sample", "figures", "samples"]

DATA = Path(__file__).resolve().parents[1] / "data" / "scan"
_LISTS: tuple[tuple[str, DefinitionKind], ...] = (
    ("tools", "tool"), ("prompts", "prompt"), ("resources", "resource"), ("resourceTemplates", "resource_template"),
)  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One labelled definition."""

    corpus: str  # reference | third-party | authored | community
    source: str  # the data file (and challenge, for the vulnerable servers)
    kind: DefinitionKind
    definition: dict[str, Any]
    poisoned: bool
    why: str
    others: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return str(self.definition.get("name") or self.definition.get("uri") or "")


def _listed(corpus: str, path: Path) -> Iterator[Sample]:
    data = json.loads(path.read_text(encoding="utf-8"))
    names = tuple(t["name"] for t in data.get("tools", []))
    for key, kind in _LISTS:
        for item in data.get(key, []):
            others = tuple(n for n in names if n != item.get("name")) if kind == "tool" else names
            yield Sample(corpus, path.name, kind, item, False, f"{corpus} server's own definition", others)


def _labelled(corpus: str, path: Path) -> Iterator[Sample]:
    entries = json.loads(path.read_text(encoding="utf-8"))
    names = [e["definition"].get("name", "") for e in entries if e["kind"] == "tool"]
    for entry in entries:
        definition = entry["definition"]
        others = tuple(n for n in names if n and n != definition.get("name"))
        source = f"{path.name}:{entry['challenge']}" if entry.get("challenge") else path.name
        yield Sample(corpus, source, entry["kind"], definition, entry["label"] == "poisoned", entry["why"], others)


def samples(corpus: str) -> list[Sample]:
    """The samples of one set."""
    if corpus in ("reference", "community"):
        return [s for path in sorted((DATA / corpus).glob("*.json")) for s in _listed(corpus, path)]
    files = sorted((DATA / "labelled").glob("*.json"))
    chosen = [f for f in files if (f.name == "bastion-authored.json") == (corpus == "authored")]
    return [s for path in chosen for s in _labelled(corpus, path)]


@dataclass
class Figures:
    """Recall and false-positive rate on a set of samples, with every miss and false positive."""

    poisoned: int = 0
    detected: int = 0
    benign: int = 0
    false_positives: int = 0
    misses: list[tuple[Sample, tuple[Finding, ...]]] = field(default_factory=list)
    false_alarms: list[tuple[Sample, tuple[Finding, ...]]] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.detected / self.poisoned if self.poisoned else 1.0

    @property
    def false_positive_rate(self) -> float:
        return self.false_positives / self.benign if self.benign else 0.0

    def lines(self, title: str) -> list[str]:
        """The figures and every miss and false positive, as text."""
        out = [f"{title}: recall {self.recall:.3f} ({self.detected}/{self.poisoned} poisoned with a high finding), "
               f"false positives {self.false_positive_rate:.4f} ({self.false_positives}/{self.benign} benign with a "
               "high finding)"]  # fmt: skip
        for sample, found in self.misses:
            best = ", ".join(f"{f.severity} {f.rule}" for f in found) or "no finding"
            out.append(f"  MISS {sample.source} {sample.kind} {sample.name!r}: {sample.why} [{best}]")
        for sample, found in self.false_alarms:
            highs = "; ".join(f"{f.rule} at {f.path}: {f.message}" for f in found if f.severity == "high")
            out.append(f"  FALSE POSITIVE {sample.source} {sample.kind} {sample.name!r}: {highs}")
        return out


def figures(items: list[Sample]) -> Figures:
    """Scan every sample and count."""
    result = Figures()
    for sample in items:
        found = scan_definition(sample.kind, sample.definition, others=sample.others)
        high = any(f.severity == "high" for f in found)
        if sample.poisoned:
            result.poisoned += 1
            result.detected += high
            if not high:
                result.misses.append((sample, found))
        else:
            result.benign += 1
            result.false_positives += high
            if high:
                result.false_alarms.append((sample, found))
    return result

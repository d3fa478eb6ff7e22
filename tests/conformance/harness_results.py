"""One scenario's result, read from the ``checks.json`` file the conformance CLI writes for it.

The CLI writes one result directory per scenario (``-o DIR`` ->
``DIR/server-<scenario>-<timestamp>/checks.json``), holding a JSON array of checks, each with a
``status`` of ``SUCCESS``, ``FAILURE``, ``WARNING`` or ``SKIPPED``. A scenario passes when no check
fails; warnings and skipped checks are kept as notes. The 0.2.0 CLI reports its own per-scenario
timeout as the failing check ``scenario-timeout``, read here as a timeout.

No MCP SDK here: the checks are the suite's, read as plain JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["passed", "failed", "timeout", "error"]

_CLI_TIMEOUT_CHECK = "scenario-timeout"
"""Check id the 0.2.0 CLI reports when a scenario overruns ``--timeout``."""


@dataclass
class ScenarioResult:
    """What one server scenario came to: ``passed``, ``failed``, ``timeout`` or ``error`` (the CLI
    gave no usable result), with the checks behind it."""

    scenario: str
    status: Status
    reason: str | None = None
    """Short failure reason: the first failing check (``Name: message``), or what went wrong."""
    checks_passed: int = 0
    checks_failed: int = 0
    warnings: list[str] = field(default_factory=list)
    """``Name: message`` of each WARNING check (a scenario with only warnings still passes)."""
    skipped: list[str] = field(default_factory=list)
    """``Name: message`` of each SKIPPED check (the suite itself did not exercise it; still a pass)."""
    not_scored: str | None = None
    """Why the requirement set runs this scenario without scoring it (``extension``, ``pending``,
    ...); ``None`` when it is scored or the run had no requirement set."""
    duration_s: float = 0.0
    checks: list[dict[str, Any]] = field(default_factory=list)
    """The raw ``checks.json`` content."""
    output: str = ""
    """The CLI's console output for this scenario (for debugging)."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _check_label(check: Mapping[str, Any]) -> str:
    name = check.get("name") or check.get("id") or "check"
    msg = check.get("errorMessage") or check.get("description") or ""
    return f"{name}: {msg}" if msg else str(name)


def shorten(text: str, limit: int = 240) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters with ``…``."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_from_checks(scenario: str, checks: list[dict[str, Any]], duration_s: float, output: str) -> ScenarioResult:
    """The ``ScenarioResult`` that a scenario's checks add up to (status, counts, first failure)."""
    failures = [c for c in checks if c.get("status") == "FAILURE"]
    successes = [c for c in checks if c.get("status") == "SUCCESS"]
    warnings = [shorten(_check_label(c)) for c in checks if c.get("status") == "WARNING"]
    skipped = [shorten(_check_label(c)) for c in checks if c.get("status") == "SKIPPED"]
    # The 0.2.0 CLI reports its own per-scenario timeout as a failing check.
    timed_out = [c for c in failures if c.get("id") == _CLI_TIMEOUT_CHECK]
    first = (timed_out or failures)[:1]
    return ScenarioResult(
        scenario=scenario,
        status="timeout" if timed_out else "failed" if failures else "passed",
        reason=shorten(_check_label(first[0])) if first else None,
        checks_passed=len(successes),
        checks_failed=len(failures),
        warnings=warnings,
        skipped=skipped,
        duration_s=duration_s,
        checks=checks,
        output=output,
    )


def find_checks(out_dir: Path, scenario: str) -> Path | None:
    """The newest ``checks.json`` the CLI wrote for ``scenario`` under ``out_dir``, if any."""
    # The CLI names result dirs "server-<scenario>-<ISO timestamp with : and . as ->".
    stamp = re.compile(re.escape(f"server-{scenario}-") + r"\d{4}-\d{2}-\d{2}T[\d-]+Z$")
    matches = sorted(p for p in out_dir.iterdir() if p.is_dir() and stamp.match(p.name))
    if not matches:
        return None
    checks = matches[-1] / "checks.json"
    return checks if checks.exists() else None


def load_checks(path: Path) -> list[dict[str, Any]]:
    """The checks in ``path``; raises ``ValueError`` when it is not a JSON array."""
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of checks")
    return data

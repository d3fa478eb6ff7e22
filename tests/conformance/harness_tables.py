"""Conformance results as text: a table of one run, a comparison of two, a one-line summary.

* ``format_table``: ``scenario | result | checks | time | note``, aligned or markdown.
* ``format_comparison``: markdown ``scenario | direct | through Bastion``, marking regressions.
* ``summary_line``: ``conformance scenarios OK: n of m``.

A result is ``PASS``, ``FAIL``, ``TIMEOUT`` or ``ERROR``; a pass notes its warnings
(``PASS (2 warn)``) or that the suite skipped every check (``PASS (skipped)``); a scenario its
requirement set does not score says so (``not scored (extension)``).
"""

from __future__ import annotations

from collections.abc import Mapping

from harness_results import ScenarioResult, Status, shorten

_MARKS: dict[Status, str] = {"passed": "PASS", "failed": "FAIL", "timeout": "TIMEOUT", "error": "ERROR"}


def _mark(r: ScenarioResult) -> str:
    mark = _MARKS[r.status]
    if r.passed and r.skipped and not r.checks_passed:
        mark += " (skipped)"
    elif r.passed and r.warnings:
        mark += f" ({len(r.warnings)} warn)"
    return mark


def _note(r: ScenarioResult) -> str:
    note = r.reason or "; ".join(r.warnings or r.skipped)
    return f"not scored ({r.not_scored}); {note}" if r.not_scored else note


def format_table(results: Mapping[str, ScenarioResult], *, markdown: bool = False) -> str:
    """One row per scenario, in ``results``' order: result, checks passed/run, time, note."""
    rows = []
    for r in results.values():
        checks = f"{r.checks_passed}/{r.checks_passed + r.checks_failed}"
        rows.append((r.scenario, _mark(r), checks, f"{r.duration_s:.2f}s", _note(r)))
    if markdown:
        out = ["| scenario | direct | checks | time | note |", "| --- | --- | --- | --- | --- |"]
        out += [f"| `{a}` | {b} | {c} | {d} | {e.replace('|', '/')} |" for a, b, c, d, e in rows]
        return "\n".join(out)
    widths = [max(len(row[i]) for row in [("scenario", "result", "checks", "time", ""), *rows]) for i in range(4)]
    head = ("scenario", "result", "checks", "time", "note")
    lines = ["  ".join(h.ljust(w) for h, w in zip(head[:4], widths, strict=True)) + "  note"]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row[:4], widths, strict=True)) + f"  {row[4]}" for row in rows]
    return "\n".join(lines)


def format_comparison(
    direct: Mapping[str, ScenarioResult],
    through: Mapping[str, ScenarioResult],
    *,
    through_label: str = "through Bastion",
) -> str:
    """Markdown table ``scenario | direct | through Bastion`` of two runs of the same selection.

    Each cell is the result and its checks (``PASS 4/4``, ``FAIL 11/14: <first failure>``);
    a scenario that passes directly but not through Bastion is marked **regression**;
    ``not scored (reason)`` follows the name of a scenario its requirement set does not score.
    Scenarios are in ``direct``'s order, then any only ``through`` has.
    """

    def cell(r: ScenarioResult | None) -> str:
        if r is None:
            return "not run"
        text = f"{_mark(r)} {r.checks_passed}/{r.checks_passed + r.checks_failed}"
        if r.reason:
            text += f": {shorten(r.reason, 120)}"
        return text.replace("|", "/")

    out = [f"| scenario | direct | {through_label} |", "| --- | --- | --- |"]
    for name in [*direct, *(n for n in through if n not in direct)]:
        d, t = direct.get(name), through.get(name)
        label = f"`{name}`"
        not_scored = (d.not_scored if d else None) or (t.not_scored if t else None)
        if not_scored:
            label += f" (not scored: {not_scored})"
        regression = d is not None and d.passed and (t is None or not t.passed)
        out.append(f"| {label} | {cell(d)} | {'**regression** ' if regression else ''}{cell(t)} |")
    ok_d = sum(r.passed for r in direct.values())
    ok_t = sum(r.passed for r in through.values())
    out.append(f"| **passed** | **{ok_d} of {len(direct)}** | **{ok_t} of {len(through)}** |")
    return "\n".join(out)


def summary_line(results: Mapping[str, ScenarioResult]) -> str:
    """``conformance scenarios OK: <passed> of <run> (not OK: <rest>)``."""
    # Worded so CI log scrapers do not mistake it for a test runner's "N passed, N failed" line.
    ok = sum(r.passed for r in results.values())
    return f"conformance scenarios OK: {ok} of {len(results)} (not OK: {len(results) - ok})"

"""Output of audit records for the CLI: a rich table for people, JSON lines for machines.

Records come from the log and may hold text chosen by a client (tool names, redacted
arguments, subjects). Neither output lets such text act on the auditor's terminal:
table cells are plain ``rich.text.Text`` (no markup parsed) with control characters
shown as ``\\xNN`` escapes, and JSON lines are ASCII-only (``ensure_ascii``), which
escapes every control, bidi and other non-ASCII character.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

__all__ = ["render_table", "to_json_lines"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_COLUMNS = (
    "seq",
    "time",
    "kind",
    "subject",
    "route",
    "method",
    "target",
    "decision",
    "outcome",
    "decision id",
)


def to_json_lines(events: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """One compact JSON object per record, keys sorted, ASCII-only, no trailing newline."""
    for event in events:
        yield json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def render_table(events: Iterable[Mapping[str, Any]]) -> Table:
    """A ``rich`` table with one row per record: seq, time, kind, subject, route, method, target,
    decision (effect, reason, policy ids) and outcome (HTTP status, duration in ms, error code).
    """
    table = Table(show_lines=False, header_style="bold")
    for name in _COLUMNS:
        table.add_column(name, overflow="fold", no_wrap=name in {"seq", "time"})
    for event in events:
        table.add_row(*(_cell(value) for value in _row(event)))
    return table


def _row(event: Mapping[str, Any]) -> tuple[Any, ...]:
    principal = _mapping(event.get("principal"))
    return (
        event.get("seq"),
        event.get("time"),
        event.get("kind"),
        principal.get("sub", "-"),
        event.get("route"),
        event.get("method"),
        event.get("target"),
        _decision(_mapping(event.get("decision"))),
        _outcome(_mapping(event.get("upstream")), _mapping(event.get("result"))),
        event.get("decision_id"),
    )


def _decision(decision: Mapping[str, Any]) -> str:
    if not decision:
        return ""
    parts = [str(decision.get("effect"))]
    if decision.get("reason"):
        parts.append(str(decision["reason"]))
    policies = decision.get("policy_ids") or []
    if policies:
        parts.append("(" + ", ".join(map(str, policies)) + ")")
    if decision.get("continues"):
        parts.append(f"continues {decision['continues']}")
    return " ".join(parts)


def _outcome(upstream: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    if not upstream and not result:
        return ""
    parts: list[str] = []
    if upstream.get("status") is not None:
        parts.append(str(upstream["status"]))
    if upstream.get("duration_ms") is not None:
        parts.append(f"{float(upstream['duration_ms']):.1f} ms")
    if result.get("error"):
        parts.append(f"error {result.get('error_code') or ''}".strip())
    flags = result.get("flags") or []
    if flags:
        parts.append("[" + ", ".join(map(str, flags)) + "]")
    return " ".join(parts) or "-"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _cell(value: Any) -> Text:
    text = "" if value is None else str(value)
    return Text(_CONTROL.sub(_escape, text))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"

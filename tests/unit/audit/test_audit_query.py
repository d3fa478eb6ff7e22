"""The CLI's reads of the SQLite log: search, tail, time ranges, a file without the log, and the table /
JSON-lines output. What every ``AuditReader`` does is in ``tests/unit/stores/test_contract_audit.py``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from audit_helpers import raw
from rich.console import Console
from tests.support.audit_events import fill_six

from bastion.audit.query import iter_events, search, tail, verify
from bastion.audit.render import render_table, to_json_lines
from bastion.audit.store_sqlite import SQLiteAuditLog


@pytest.fixture
async def filled(db: Path) -> Path:
    """Six events: alice allow + outcome and bob deny on github; carol allow x2 and alice deny on jira."""
    async with SQLiteAuditLog(db) as log:
        await fill_six(log)
    return db


def _seqs(events: list[dict[str, object]]) -> list[object]:
    return [e["seq"] for e in events]


@pytest.mark.parametrize(
    ("kwargs", "seqs"),
    [
        ({}, [1, 2, 3, 4, 5, 6]),
        ({"subject": "alice"}, [1, 2, 6]),
        ({"route": "jira"}, [4, 5, 6]),
        ({"tool": "create_ticket"}, [4, 5]),
        ({"decision": "deny"}, [3, 6]),
        ({"subject": "alice", "decision": "deny"}, [6]),
        ({"route": "github", "limit": 2}, [2, 3]),  # the newest matches, oldest first
        ({"subject": "nobody"}, []),
    ],
)
async def test_search_filters(filled: Path, kwargs: dict[str, object], seqs: list[int]) -> None:
    assert _seqs(search(filled, **kwargs)) == seqs  # type: ignore[arg-type]


async def test_search_by_time_range(filled: Path) -> None:
    times = [e["time"] for e in iter_events(filled)]
    assert times == sorted(times)
    with raw(filled) as conn:  # spread the events over six hours, keeping the text form
        base = datetime(2026, 5, 9, 6, tzinfo=UTC)
        for seq in range(1, 7):
            stamp = (base + timedelta(hours=seq - 1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            conn.execute("UPDATE audit_events SET time = ? WHERE seq = ?", (stamp, seq))
    since = datetime(2026, 5, 9, 7, tzinfo=UTC)
    until = datetime(2026, 5, 9, 13, 30, tzinfo=timezone(timedelta(hours=2)))  # 11:30 UTC
    assert _seqs(search(filled, since=since, until=until)) == [2, 3, 4, 5, 6]
    assert _seqs(search(filled, since="2026-05-09T10:00:00Z")) == [5, 6]
    assert _seqs(search(filled, until="2026-05-09T07:00:00+00:00")) == [1]  # until is exclusive
    with pytest.raises(ValueError, match="timezone-aware"):
        search(filled, since=datetime(2026, 5, 9))  # noqa: DTZ001 - the naive value is the point


async def test_tail_returns_the_newest_oldest_first(filled: Path) -> None:
    assert _seqs(tail(filled, 2)) == [5, 6]
    assert len(tail(filled, 100)) == 6


def test_missing_file_and_file_without_the_table(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        tail(tmp_path / "nope.db")
    other = tmp_path / "other.db"
    with raw(other) as conn:
        conn.execute("CREATE TABLE sessions (id TEXT)")
    assert tail(other) == []
    assert verify(other).ok


async def test_json_lines_are_one_ascii_object_each(filled: Path) -> None:
    lines = list(to_json_lines(search(filled, subject="bob")))
    assert len(lines) == 1
    assert "\n" not in lines[0]
    assert json.loads(lines[0])["decision"]["reason"] == "policy_denied"
    assert list(to_json_lines([{"t": "é\u202e\x1b[31m"}])) == ['{"t":"\\u00e9\\u202e\\u001b[31m"}']


async def test_table_shows_one_row_per_event_without_markup_or_escapes(filled: Path) -> None:
    events = tail(filled, 6)
    events.append({**events[0], "seq": 99, "target": "[bold]x[/bold]\x1b[2J"})
    console = Console(record=True, width=250, color_system=None)
    console.print(render_table(events))
    text = console.export_text()
    assert render_table(events).row_count == 7
    assert "deny policy_denied (p1)" in text
    assert "200 12.5 ms" in text
    assert "[bold]x[/bold]\\x1b[2J" in text
    assert "\x1b" not in text


def test_table_shows_what_a_record_continues_and_an_outcomes_flags() -> None:
    decision = {
        "seq": 1, "kind": "decision", "method": "tasks/get", "target": "deploy", "decision_id": "d2",
        "decision": {"effect": "allow", "policy_ids": ["p1"], "continues": "d1"},
    }  # fmt: skip
    outcome = {
        "seq": 2, "kind": "outcome", "method": "tools/call", "target": "deploy", "decision_id": "d1",
        "upstream": {"status": 200, "duration_ms": 3.0}, "result": {"error": False, "flags": ["task"]},
    }  # fmt: skip
    console = Console(record=True, width=250, color_system=None)
    console.print(render_table([decision, outcome]))
    text = console.export_text()
    assert "allow (p1) continues d1" in text
    assert "200 3.0 ms [task]" in text

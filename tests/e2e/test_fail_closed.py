"""Fail closed, through real processes: when the audit log cannot commit the decision record, a
running Bastion refuses the call (503, JSON-RPC -32603) and the upstream never sees it.

The audit database of a real ``bastion serve`` is made to refuse every insert from outside (a
SQLite trigger that aborts, added while Bastion runs), as a full disk or a broken volume would;
the upstream is the demo notes server, which records every request it receives.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess, notes_server
from tests.support.e2e_helpers import modern_post, reply_message

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BastionProcess, str]]:
    workdir: Path = tmp_path_factory.mktemp("fail-closed")
    with notes_server() as notes_url:
        config = {
            "policy": {"files": [str(DEMO_CEDAR)]},
            "routes": [{"name": "notes", "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
        }
        with BastionProcess(workdir, config) as bastion:
            yield bastion, notes_url.removesuffix("/mcp") + "/debug/requests"


def _calls_seen(debug_url: str) -> int:
    seen = httpx2.get(debug_url, timeout=5).json()
    return sum(1 for headers in seen if headers.get("mcp-method") == "tools/call")


def _search(bastion: BastionProcess, token: str) -> httpx2.Response:
    with httpx2.Client(timeout=15) as http:
        return modern_post(
            http, bastion.url("notes"), token, "tools/call", {"name": "search_notes", "arguments": {"query": "x"}}
        )


def test_a_call_whose_decision_cannot_be_recorded_is_refused_and_never_forwarded(
    running: tuple[BastionProcess, str],
) -> None:
    bastion, debug_url = running
    token = bastion.mint("alice", "notes", "engineering")
    allowed = _search(bastion, token)
    assert allowed.status_code == 200
    assert "result" in reply_message(allowed)
    before = _calls_seen(debug_url)
    assert before >= 1
    with sqlite3.connect(bastion.database) as db:
        db.execute(
            "CREATE TRIGGER refuse_all BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    try:
        refused = _search(bastion, token)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == -32603
        assert _calls_seen(debug_url) == before  # nothing reached the upstream
    finally:
        with sqlite3.connect(bastion.database) as db:
            db.execute("DROP TRIGGER refuse_all")
    again = _search(bastion, token)
    assert again.status_code == 200  # once the log can write again, calls go through
    assert _calls_seen(debug_url) == before + 1

"""Bastion ends the upstream sessions it opened: when a client ends its session, and at shutdown.

A real notes server (Streamable HTTP) records the method and headers of what
reaches it; the test opens sessions through a real Bastion, ends one with
DELETE, leaves one open, stops Bastion with SIGTERM, and checks that the
upstream received a DELETE for each upstream session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from tests.e2e.conftest import DEMO_CEDAR
from tests.support.bastion_process import BastionProcess, notes_server
from tests.support.e2e_helpers import LEGACY_VERSION, open_session, raw_headers

pytestmark = pytest.mark.e2e


@pytest.fixture
def notes() -> Iterator[str]:
    with notes_server() as url:
        yield url


def _upstream_sessions(debug: str) -> tuple[set[str], set[str]]:
    """(session ids the upstream issued or was sent, session ids it was asked to DELETE)."""
    seen = httpx2.get(debug).json()
    used = {h["mcp-session-id"] for h in seen if "mcp-session-id" in h}
    deleted = {h["mcp-session-id"] for h in seen if h.get(":method") == "DELETE" and "mcp-session-id" in h}
    return used, deleted


def test_upstream_sessions_are_ended_on_delete_and_at_shutdown(notes: str, tmp_path: Path) -> None:
    (tmp_path / "demo.cedar").write_text(DEMO_CEDAR.read_text(encoding="utf-8"), encoding="utf-8")
    routes = [{"name": "notes", "http": {"url": notes, "allow_http": True, "allow": ["127.0.0.1"]}}]
    config = {"policy": {"files": [str(tmp_path / "demo.cedar")]}, "routes": routes}
    bastion = BastionProcess(tmp_path, config).start()
    debug = notes.removesuffix("/mcp") + "/debug/requests"
    try:
        token = bastion.mint("alice", "notes", "engineering")
        with httpx2.Client(timeout=10) as http:
            ended = open_session(http, bastion.url("notes"), token)
            open_session(http, bastion.url("notes"), token)  # left open
            response = http.delete(
                bastion.url("notes"),
                headers=raw_headers(token, mcp_session_id=ended, mcp_protocol_version=LEGACY_VERSION),
            )
            assert response.status_code == 200
        used, deleted = _upstream_sessions(debug)
        assert len(used) == 2  # two upstream sessions, behind Bastion's own ids
        assert ended not in used  # the client never sees, nor sends, an upstream session id
        assert len(deleted) == 1
    finally:
        bastion.stop()
    used, deleted = _upstream_sessions(debug)
    assert deleted == used  # the session left open was ended when Bastion stopped

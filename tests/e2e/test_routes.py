"""Routes: two official stdio reference servers and one Streamable HTTP server behind one Bastion.

Every test drives the official MCP SDK client through ``bastion serve`` with
both protocols: the 2025-11-25 session protocol and the stateless 2026-07-28 one.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from mcp.types import TextContent
from tests.e2e.conftest import DEMO_CEDAR, Gateway
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import PROTOCOLS, connect, initialize_params, raw_headers, reply_message, rpc

pytestmark = pytest.mark.e2e


def _text(result: object) -> str:
    content = getattr(result, "content", [])
    return "\n".join(c.text for c in content if isinstance(c, TextContent))


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_stdio_time_route_lists_and_calls(gateway: Gateway, mode: str) -> None:
    async with connect(gateway.url("time"), gateway.token("alice", "time"), mode) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("get_current_time", {"timezone": "UTC"})
    assert {"get_current_time", "convert_time"} <= tools
    assert not result.is_error, _text(result)
    assert '"timezone": "UTC"' in _text(result) or "UTC" in _text(result)
    assert "datetime" in _text(result)


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_http_notes_route_lists_and_calls(gateway: Gateway, mode: str) -> None:
    async with connect(gateway.url("notes"), gateway.token("alice", "notes"), mode) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("search_notes", {"query": "systemctl"})
    assert tools == {"read_logs", "search_notes", "add_note", "delete_note"}
    assert not result.is_error, _text(result)
    assert "runbook" in _text(result)


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_second_stdio_git_route_lists_and_calls(gateway: Gateway, mode: str) -> None:
    async with connect(gateway.url("git"), gateway.token("alice", "git"), mode) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        status = await client.call_tool("git_status", {"repo_path": str(gateway.repo)})
        log = await client.call_tool("git_log", {"repo_path": str(gateway.repo)})
    assert {"git_status", "git_log", "git_diff"} <= tools
    assert not status.is_error, _text(status)
    assert "main" in _text(status)
    assert not log.is_error, _text(log)
    assert "first commit" in _text(log)


def test_an_http_upstream_on_loopback_without_an_allow_entry_is_refused_and_audited(
    gateway: Gateway, tmp_path: Path
) -> None:
    """The notes server on 127.0.0.1, plain http allowed but its address not: every call is refused."""
    (tmp_path / "demo.cedar").write_text(DEMO_CEDAR.read_text(encoding="utf-8"), encoding="utf-8")
    routes = [{"name": "notes", "http": {"url": gateway.notes_url, "allow_http": True}}]
    config = {"policy": {"files": [str(tmp_path / "demo.cedar")]}, "routes": routes}
    with BastionProcess(tmp_path, config) as bastion:
        token = bastion.mint("alice", "notes", "engineering")
        before = len(httpx2.get(gateway.notes_debug).json())
        response = httpx2.post(
            bastion.url("notes"), json=rpc("initialize", initialize_params()), headers=raw_headers(token), timeout=10
        )
        rows = bastion.audit_rows("egress/connect")
        log = bastion.log()
    assert response.status_code == 403, response.text
    error = reply_message(response)["error"]
    assert error["code"] == -32003
    assert error["message"] == "the egress guard refused the upstream: 127.0.0.1 is a loopback address"
    assert rows == [("deny", "egress_denied", gateway.notes_url)]
    assert len(httpx2.get(gateway.notes_debug).json()) == before  # the upstream never saw the call
    assert "Traceback" not in log

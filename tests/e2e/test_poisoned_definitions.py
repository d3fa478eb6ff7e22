"""A poisoned MCP server behind a real ``bastion serve`` (issue 15, "Definition scanning"): under
``hide`` the client never sees the poisoned tools and calls to them are denied with an audit record;
under ``warn`` they pass with a finding recorded; under ``block`` the route refuses everything.

Real processes on loopback: ``tests/support/poisoned_server.py`` (written with the official SDK:
a hidden ``<IMPORTANT>`` instruction, Unicode tag characters, shadowing of another server's
``send_email``, an instruction in a parameter's default) over stdio, three times, one route each,
``bastion serve`` and the official SDK client.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import MCPError
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import (
    LEGACY_VERSION,
    audit_records,
    connect,
    legacy_post,
    open_session,
    raw_headers,
    reply_message,
    rpc,
    wait_until,
)
from tests.support.poisoned_server import BENIGN_TOOLS, POISONED_TOOLS

pytestmark = pytest.mark.e2e

SERVER = Path(__file__).resolve().parents[1] / "support" / "poisoned_server.py"
POLICY = '@id("users-call") permit (principal in Group::"users", action == Action::"tools/call", resource);\n'
LEGACY = "legacy"
ARGUMENTS: dict[str, dict[str, Any]] = {
    "add": {"a": 1, "b": 2, "sidenote": ""},
    "get_weather": {"city": "Oslo"},
    "daily_fact": {},
    "lookup": {"term": "mcp"},
    "echo": {"text": "hi"},
}


def route(name: str, **on_finding: str) -> dict[str, Any]:
    return {"name": name, "stdio": {"command": sys.executable, "args": [str(SERVER)]},
            "definitions": {"on_finding": on_finding} if on_finding else {}}  # fmt: skip


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    workdir = tmp_path_factory.mktemp("poisoned")
    (workdir / "p.cedar").write_text(POLICY, encoding="utf-8")
    config = {
        "policy": {"files": [str(workdir / "p.cedar")]},
        "routes": [route("hidden"), route("warned", high="warn"), route("blocked", high="block"),
                   route("blocked-stream", high="block")],
    }
    with BastionProcess(workdir, config) as process:
        yield process


def token(bastion: BastionProcess, name: str) -> str:
    return bastion.mint("uma", name, "users", email="uma@example.com")


async def listed_and_called(bastion: BastionProcess, name: str) -> tuple[set[str], dict[str, str]]:
    """The tools the SDK client sees on route ``name``, and each tool's call: ``ok`` or the error."""
    outcomes: dict[str, str] = {}
    async with connect(bastion.url(name), token(bastion, name), LEGACY) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
        for tool, arguments in ARGUMENTS.items():
            try:
                result = await client.call_tool(tool, arguments)
                outcomes[tool] = "error" if result.is_error else "ok"
            except MCPError as refused:
                outcomes[tool] = f"{refused.code} {(refused.error.data or {}).get('reason', '')}"
    return listed, outcomes


def test_under_hide_the_poisoned_tools_are_never_seen_and_their_calls_are_denied(bastion: BastionProcess) -> None:
    listed, outcomes = asyncio.run(listed_and_called(bastion, "hidden"))
    assert listed == set(BENIGN_TOOLS)
    assert outcomes["echo"] == "ok"
    assert {tool: outcomes[tool] for tool in POISONED_TOOLS} == dict.fromkeys(POISONED_TOOLS, "-32003 finding")

    def denials() -> set[str] | None:
        found = {r["target"] for r in audit_records(bastion.database, "tools/call")
                 if r["kind"] == "decision" and r["route"] == "hidden"
                 and r["decision"]["reason"] == "definition_quarantined"}  # fmt: skip
        return found if found == set(POISONED_TOOLS) else None

    assert wait_until(denials, timeout_s=10)
    findings = {r["target"] for r in audit_records(bastion.database, "definition/finding") if r["route"] == "hidden"}
    assert set(POISONED_TOOLS) <= findings


def test_under_warn_they_pass_with_the_finding_recorded(bastion: BastionProcess) -> None:
    listed, outcomes = asyncio.run(listed_and_called(bastion, "warned"))
    assert listed == set(POISONED_TOOLS) | set(BENIGN_TOOLS)
    assert set(outcomes.values()) == {"ok"}
    findings = {r["target"] for r in audit_records(bastion.database, "definition/finding") if r["route"] == "warned"}
    assert set(POISONED_TOOLS) <= findings


def test_under_block_the_route_refuses_everything(bastion: BastionProcess) -> None:
    async def attempt() -> list[str]:
        seen: list[str] = []
        async with connect(bastion.url("blocked"), token(bastion, "blocked"), LEGACY) as client:
            for step in (client.list_tools(), client.call_tool("echo", ARGUMENTS["echo"])):
                try:  # the first listing finds the poisoned definitions: from then on, nothing is served
                    await step
                    seen.append("served")
                except MCPError as refused:
                    seen.append(f"{refused.code} {'blocked' in refused.message}")
        return seen

    assert asyncio.run(attempt()) == ["-32003 True", "-32003 True"]

    def refusals() -> list[str] | None:
        found = [r["decision"]["reason"] for r in audit_records(bastion.database, "tools/call")
                 if r["route"] == "blocked" and r["kind"] == "decision"]  # fmt: skip
        return found or None

    assert wait_until(refusals, timeout_s=10) == ["route_blocked"]  # the honest echo: never forwarded


def test_a_blocked_route_opens_no_event_stream_and_lets_the_session_end(bastion: BastionProcess) -> None:
    url, bearer = bastion.url("blocked-stream"), token(bastion, "blocked-stream")
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, url, bearer)
        listing = legacy_post(http, url, bearer, session, rpc("tools/list", {}, rpc_id=2))
        assert reply_message(listing)["error"]["code"] == -32003  # the listing found the poisoned tools
        headers = raw_headers(bearer, mcp_session_id=session, mcp_protocol_version=LEGACY_VERSION)
        stream = http.get(url, headers={**headers, "accept": "text/event-stream"})
        assert not stream.headers["content-type"].startswith("text/event-stream")
        assert stream.json()["error"]["code"] == -32003
        assert "blocked" in stream.json()["error"]["message"]
        assert http.delete(url, headers=headers).status_code in (200, 202, 204)

"""Rate limits and quotas through a real ``bastion serve`` (issue 14): exact under concurrency,
refused calls are 429 with ``Retry-After`` and never reach the upstream, quotas survive a restart,
and a policy's own ``@rate`` counts per principal.

Real processes on loopback: the ledger MCP server (``tests/support/ledger_server``: it counts the
``deploy`` calls it carries out), ``bastion serve``, the official SDK client and raw 2026-07-28
requests (to read the HTTP status and headers).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import MCPError
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import connect, modern_post, wait_until
from tests.support.ledger_server import ledger_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("dev-deploy")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");

@id("dev-restart")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/restart");

@id("status-twice-a-minute") @rate("2/minute")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/status");
"""
LIMITS = [
    {"name": "deploys-per-person", "match": {"route": "ledger", "tool": "deploy", "group": "dev"}, "rate": "5/minute"},
    {"name": "restarts-per-day", "match": {"tool": "restart"}, "quota": "3/day"},
]


@dataclass
class World:
    bastion: BastionProcess
    ledger: Any

    def token(self, who: str) -> str:
        return self.bastion.mint(who, "ledger", "dev", email=f"{who}@example.com")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("limits")
    (workdir / "limits.cedar").write_text(POLICY, encoding="utf-8")
    with ledger_server() as (url, ledger):
        config = {
            "policy": {"files": [str(workdir / "limits.cedar")]},
            "limits": LIMITS,
            "routes": [{"name": "ledger", "http": {"url": url, "allow_http": True, "allow": ["127.0.0.1"]}}],
        }
        with BastionProcess(workdir, config) as bastion:
            yield World(bastion, ledger)


def outcomes(database: Path, tool: str) -> int:
    """How many calls of ``tool`` have an allowed decision and an outcome in the audit log."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT record FROM audit_events").fetchall()
    records = [json.loads(r[0]) for r in rows]
    allowed = {r["decision_id"] for r in records
               if r["kind"] == "decision" and r["method"] == "tools/call" and r["target"] == tool
               and r["decision"]["effect"] == "allow"}  # fmt: skip
    return sum(1 for r in records if r["kind"] == "outcome" and r["decision_id"] in allowed)


def test_exactly_n_concurrent_calls_are_admitted_and_the_rest_are_429(world: World) -> None:
    before = len(world.ledger())
    token = world.token("rita")

    async def one(index: int) -> str:
        async with connect(world.bastion.url("ledger"), token, "legacy") as client:
            try:
                result = await client.call_tool("deploy", {"service": f"s{index}", "env": "prod"})
            except MCPError as refused:
                return f"refused {refused.code}"
            except Exception as refused:  # noqa: BLE001 - a 429 may surface as the transport's error
                return f"refused {type(refused).__name__}"
            return "error" if result.is_error else "admitted"

    async def burst() -> list[str]:
        return list(await asyncio.gather(*(one(i) for i in range(12))))

    results = asyncio.run(burst())
    assert results.count("admitted") == 5, results
    assert all(r.startswith("refused") for r in results if r != "admitted")
    assert len(world.ledger()) - before == 5  # the upstream's own count
    assert outcomes(world.bastion.database, "deploy") == 5  # the audit log's allowed outcomes agree
    with httpx2.Client(timeout=10) as http:
        answer = modern_post(http, world.bastion.url("ledger"), token, "tools/call",
                             {"name": "deploy", "arguments": {"service": "x", "env": "prod"}})  # fmt: skip
    assert answer.status_code == 429
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    error = answer.json()["error"]
    assert error["code"] == -32003
    assert (error["data"]["limit"], error["data"]["rate"]) == ("deploys-per-person", "5/minute")
    assert "deploys-per-person" in error["message"]

    def refusals() -> int:  # deny records are committed within milliseconds, not before the answer
        rows = world.bastion.audit_rows("tools/call")
        return sum(1 for _, reason, target in rows if reason == "rate_limited" and target == "deploy")

    assert wait_until(lambda: refusals() == 8 or None, timeout_s=5)

    # per principal: another person has their own five
    async def other() -> str:
        async with connect(world.bastion.url("ledger"), world.token("sam"), "legacy") as client:
            return (await client.call_tool("deploy", {"service": "sam", "env": "prod"})).content[0].text

    assert asyncio.run(other()) == "deployed sam to prod"


def test_a_policys_own_rate_counts_per_principal(world: World) -> None:
    token = world.token("pat")
    status = {"name": "status", "arguments": {}}
    with httpx2.Client(timeout=10) as http:
        codes = [modern_post(http, world.bastion.url("ledger"), token, "tools/call", status) for _ in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert codes[2].json()["error"]["data"]["limit"] == "policy:status-twice-a-minute:rate"


def test_a_quota_survives_a_restart(world: World) -> None:
    token = world.token("quinn")
    url = world.bastion.url("ledger")

    def restart(http: httpx2.Client) -> int:
        return modern_post(
            http, url, token, "tools/call", {"name": "restart", "arguments": {"service": "api"}}
        ).status_code

    with httpx2.Client(timeout=10) as http:
        assert [restart(http) for _ in range(2)] == [200, 200]
    world.bastion.stop()
    world.bastion.start()
    with httpx2.Client(timeout=10) as http:
        assert [restart(http) for _ in range(2)] == [200, 429]  # 3/day, counted across the restart

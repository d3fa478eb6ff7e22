"""The portal answers what a gateway did for a person, through a real ``bastion serve`` and headless
Chromium: each server card lists the tools this person may call (risk, whether calls need approval),
and ``/portal/activity`` shows their own recent calls from the audit log, everyone's to an auditor.

Real processes on loopback: the ledger MCP server (``tests/support/ledger_server``) behind two routes
(``ledger``, which people call, and ``spare``, which nobody does), ``bastion serve``, the official SDK
client. People (users file and minted tokens alike): rita and bob (dev) call tools; olga (ops)
approves; audra (audit) may search everyone's calls.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp import MCPError
from tests.support.bastion_process import BastionProcess, write_users_file
from tests.support.browser import chromium
from tests.support.browser_people import new_context, portal_sign_in
from tests.support.e2e_helpers import connect
from tests.support.ledger_server import ledger_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("dev-deploy") @approval("review")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");

@id("no-staging-deploys")
forbid (principal, action == Action::"tools/call", resource == Tool::"ledger/deploy")
when { context.arguments has env && context.arguments.env == "staging" };

@id("anyone-status")
permit (principal, action == Action::"tools/call", resource is Tool) when { resource.name == "status" };

@id("ops-decide")
permit (principal in Group::"ops", action == Action::"approvals/decide", resource is Approval);

@id("auditors")
permit (principal in Group::"audit", action == Action::"audit/search", resource == AuditLog::"bastion");
"""
GROUPS = {"rita": ("dev",), "bob": ("dev",), "olga": ("ops",), "audra": ("audit",)}
PASSWORDS = {name: f"{name}'s long passphrase" for name in GROUPS}
MODE = "legacy"


@dataclass
class World:
    bastion: BastionProcess
    approval_id: str

    def token(self, who: str) -> str:
        return self.bastion.mint(who, "ledger", *GROUPS[who], email=f"{who}@example.com")


async def _call(bastion: BastionProcess, token: str, tool: str, arguments: dict[str, str]) -> Any:
    async with connect(bastion.url("ledger"), token, MODE) as client:
        return await client.call_tool(tool, arguments)


async def _denied(bastion: BastionProcess, token: str, tool: str, arguments: dict[str, str]) -> str:
    """The error message of a call that policy denies."""
    async with connect(bastion.url("ledger"), token, MODE) as client:
        with pytest.raises(MCPError) as denied:
            await client.call_tool(tool, arguments)
    return str(denied.value)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """rita: status, a staging deploy (denied), a prod deploy (pending), approved by olga, run again
    (allowed with olga's grant). bob: status and a staging deploy (denied)."""
    workdir = tmp_path_factory.mktemp("activity")
    (workdir / "activity.cedar").write_text(POLICY, encoding="utf-8")
    users = write_users_file(workdir, {name: (PASSWORDS[name], GROUPS[name]) for name in GROUPS})
    with ledger_server() as (url, _):
        http = {"url": url, "allow_http": True, "allow": ["127.0.0.1"]}
        tools = {"deploy": {"risk": "destructive"}, "status": {"risk": "read"}}
        config = {
            "identity": {"authorization_server": {"users_file": users, "scopes": ["mcp"], "default_scopes": ["mcp"]}},
            "policy": {"files": [str(workdir / "activity.cedar")]},
            "approvals": {"hold": 0, "ttl": "15m"},
            "routes": [{"name": "ledger", "http": http, "tools": tools},
                       {"name": "spare", "http": http, "tools": tools}],
        }  # fmt: skip
        with BastionProcess(workdir, config) as bastion:
            world = World(bastion, "")
            rita, bob = world.token("rita"), world.token("bob")
            prod = {"service": "api", "env": "prod"}

            async def calls() -> str:
                assert not (await _call(bastion, rita, "status", {})).is_error
                staging = await _denied(bastion, rita, "deploy", {"service": "api", "env": "staging"})
                assert "no-staging-deploys" in staging
                pending = await _call(bastion, rita, "deploy", prod)
                approval_id: str = pending.structured_content["error"]["approval"]
                assert not (await _call(bastion, bob, "status", {})).is_error
                assert "no-staging-deploys" in await _denied(bastion, bob, "deploy", {"service": "b", "env": "staging"})
                return approval_id

            world.approval_id = asyncio.run(calls())
            decided = httpx2.post(
                f"{bastion.base_url}/portal/api/approvals/{world.approval_id}",
                json={"decision": "approve", "reason": "ok"},
                headers={"authorization": f"Bearer {world.token('olga')}"},
                timeout=10,
            )
            assert decided.status_code == 200, decided.text
            assert not asyncio.run(_call(bastion, rita, "deploy", prod)).is_error
            yield world


async def sign_in(page: Any, base: str, name: str) -> None:
    """Sign ``name`` in at the portal with the password form, in Chromium."""
    await portal_sign_in(page, base, name, PASSWORDS[name])


async def rows(page: Any) -> list[list[str]]:
    """The activity table's rows, each cell's text (no table: no rows)."""
    cells: list[list[str]] = await page.eval_on_selector_all(
        "table.activity tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"
    )
    return cells


def assert_page_headers(headers: dict[str, str]) -> None:
    """The consent page's protections (``bastion.oauth.pages``)."""
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self';" in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"


def audit_searches(world: World) -> list[dict[str, Any]]:
    with sqlite3.connect(world.bastion.database) as db:
        found = db.execute(
            "SELECT record FROM audit_events WHERE json_extract(record, '$.method') = 'audit/search' ORDER BY seq"
        ).fetchall()
    return [json.loads(row[0]) for row in found]


def test_the_server_card_lists_the_tools_this_person_may_call(world: World) -> None:
    base = world.bastion.base_url

    async def scenario() -> tuple[dict[str, str], str, str]:
        async with chromium() as browser:
            page = await (await new_context(browser)).new_page()
            await sign_in(page, base, "rita")
            response = await page.goto(f"{base}/portal")
            ledger = await page.get_by_role("list", name="Tools you may call on ledger").inner_text()
            card = await page.locator("dd").nth(1).inner_text()  # spare, whose tools nobody listed yet
            assert response is not None
            return await response.all_headers(), ledger, card

    headers, ledger, spare = asyncio.run(scenario())
    assert_page_headers(headers)
    lines = sorted(line.strip() for line in ledger.splitlines() if line.strip())
    assert lines == ["deploy risk destructive · needs approval", "status risk read"]
    assert "Tools are listed after the first use." in spare


def test_the_api_lists_the_tools_too(world: World) -> None:
    answer = httpx2.get(f"{world.bastion.base_url}/portal/api/routes",
                        headers={"authorization": f"Bearer {world.token('audra')}"}, timeout=10)  # fmt: skip
    assert answer.status_code == 200
    routes = {r["name"]: r["tools"] for r in answer.json()["routes"]}
    # audra is not in dev: only status (anyone-status) is hers to call; spare's tools are not known yet
    assert routes == {"ledger": [{"name": "status", "risk": "read", "approval": "no"}], "spare": None}


def test_a_person_sees_only_their_own_calls(world: World) -> None:
    base = world.bastion.base_url

    async def scenario() -> dict[str, Any]:
        async with chromium() as browser:
            page = await (await new_context(browser)).new_page()
            await sign_in(page, base, "rita")
            await page.get_by_role("link", name="Your recent calls").click()
            seen: dict[str, Any] = {"url": page.url, "all": await rows(page), "text": await page.content()}
            response = await page.goto(f"{base}/portal/activity?subject=bob")
            assert response is not None
            seen["headers"] = await response.all_headers()
            seen["subject=bob"] = await rows(page)
            await page.get_by_label("Decision").select_option("deny")
            async with page.expect_navigation():
                await page.get_by_role("button", name="Show").click()
            seen["denied"] = await rows(page)
            seen["denied_url"] = page.url
            return seen

    seen = asyncio.run(scenario())
    assert seen["url"] == f"{base}/portal/activity"
    assert_page_headers(seen["headers"])
    # Time, client, server, tool, decision and policies, approval, outcome; newest first; no person column.
    shown = [(r[2], r[3], r[4].split()[0], r[6]) for r in seen["all"]]
    assert shown == [
        ("ledger", "deploy", "allow", "ok"),
        ("ledger", "deploy", "deny", "not run"),  # the pending request
        ("ledger", "deploy", "deny", "not run"),
        ("ledger", "status", "allow", "ok"),
    ]
    approved, pending, denied, _ = seen["all"]
    assert "dev-deploy" in approved[4]
    assert world.approval_id in approved[5]
    assert "olga@example.com" in approved[5]
    assert world.approval_id in pending[5]
    assert "approval_pending" in pending[4]
    assert "no-staging-deploys" in denied[4]
    assert "bob@example.com" not in seen["text"]
    assert 'name="subject"' not in seen["text"]  # rita is no auditor
    assert seen["subject=bob"] == seen["all"]  # another person's subject is ignored
    assert "effect=deny" in seen["denied_url"]
    assert [(r[3], r[4].split()[0]) for r in seen["denied"]] == [("deploy", "deny"), ("deploy", "deny")]
    assert all(r["principal"]["sub"] != "rita" for r in audit_searches(world))  # no auditor, no search


def test_an_auditor_searches_anyones_calls(world: World) -> None:
    base = world.bastion.base_url
    before = len(audit_searches(world))

    async def scenario() -> dict[str, list[list[str]]]:
        async with chromium() as browser:
            page = await (await new_context(browser)).new_page()
            await sign_in(page, base, "audra")
            await page.goto(f"{base}/portal/activity?subject=bob")
            seen = {"bob": await rows(page)}
            await page.get_by_label("Person").fill("")
            async with page.expect_navigation():
                await page.get_by_role("button", name="Show").click()
            seen["everyone"] = await rows(page)
            await page.goto(f"{base}/portal/activity?subject=rita&route=nowhere&effect=maybe")
            seen["rita"] = await rows(page)
            return seen

    seen = asyncio.run(scenario())
    # the auditor's table has a person column after the time
    assert [(r[1], r[4], r[5].split()[0]) for r in seen["bob"]] == [
        ("bob@example.com (bob)", "deploy", "deny"),
        ("bob@example.com (bob)", "status", "allow"),
    ]
    assert "no-staging-deploys" in seen["bob"][0][5]
    people = [r[1].split()[0] for r in seen["everyone"]]
    assert sorted(set(people)) == ["bob@example.com", "rita@example.com"]
    assert len(people) == 6
    assert len(seen["rita"]) == 4  # unknown route and effect are ignored
    searches = audit_searches(world)[before:]
    assert [r["principal"]["sub"] for r in searches] == ["audra"] * 3
    assert [r["arguments"]["subject"] for r in searches] == ["bob", "*", "rita"]  # whose calls she searched

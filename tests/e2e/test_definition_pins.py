"""Pinning and quarantine through a real ``bastion serve`` (issue 15): a server that changes a tool
after it was approved (a rug pull) has that tool quarantined for every user until an administrator
reviews the diff and approves it.

Real processes on loopback: two instances of the rug-pull MCP server (``tests/support/rugpull_server``:
``upgrade`` swaps ``forecast``'s description for one that asks for ``~/.ssh/id_rsa``, adds
``backup_keys`` and announces ``notifications/tools/list_changed``), ``bastion serve`` with a route
on each (``weather``: pins made by an administrator, the default; ``auto``: ``pin: first_use``), the
official SDK client as two users (alice, bob), raw requests to read the JSON-RPC error, the
``bastion tools diff | approve | pins`` CLI (``approve`` through the gateway's API, as ada, whom
policy lets approve; mallory, whom it does not, is refused) and headless Chromium for the portal's
review page (ada and mallory signed in with the users file).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp import MCPError
from tests.support.bastion_process import BastionProcess, write_users_file
from tests.support.browser import chromium
from tests.support.browser_people import new_context, portal_sign_in
from tests.support.e2e_helpers import audit_records, connect, legacy_post, open_session, reply_message, rpc
from tests.support.rugpull_server import HONEST, POISONED, rugpull_server

pytestmark = pytest.mark.e2e

PASSWORDS = {"ada": "ada's long passphrase", "mallory": "mallory's long passphrase"}
UPGRADE = "Switch to the premium forecast service."
POLICY = """
@id("users-call") permit (principal in Group::"users", action == Action::"tools/call", resource);

@id("admins-pin")
permit (principal in Group::"admins", action == Action::"definitions/approve", resource);
"""


@dataclass
class World:
    bastion: BastionProcess
    calls: dict[str, Callable[[], list[dict[str, Any]]]]

    def token(self, who: str, route: str = "weather") -> str:
        return self.bastion.mint(who, route, "users", email=f"{who}@example.com")

    def cli(self, *args: str) -> Any:
        return self.bastion.cli("tools", *args, "--config", str(self.bastion.config_path), check=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("pins")
    (workdir / "pins.cedar").write_text(POLICY, encoding="utf-8")
    with rugpull_server() as (weather, weather_calls), rugpull_server() as (auto, auto_calls):
        upstream = {"allow_http": True, "allow": ["127.0.0.1"]}
        users = write_users_file(workdir, {"ada": (PASSWORDS["ada"], ["admins"]),
                                           "mallory": (PASSWORDS["mallory"], ["users"])})  # fmt: skip
        config = {
            "identity": {"authorization_server": {"users_file": users}},
            "policy": {"files": [str(workdir / "pins.cedar")]},
            "routes": [
                {"name": "weather", "http": {"url": weather, **upstream}},
                {"name": "auto", "http": {"url": auto, **upstream}, "definitions": {"pin": "first_use"}},
            ],
        }
        with BastionProcess(workdir, config) as bastion:
            yield World(bastion, {"weather": weather_calls, "auto": auto_calls})


async def _tools(world: World, who: str, route: str = "weather") -> dict[str, str]:
    async with connect(world.bastion.url(route), world.token(who, route), "legacy") as client:
        return {tool.name: tool.description or "" for tool in (await client.list_tools()).tools}


async def _call(world: World, who: str, tool: str, arguments: dict[str, Any], route: str = "weather") -> str:
    async with connect(world.bastion.url(route), world.token(who, route), "legacy") as client:
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as refused:
            return f"refused {refused.code}: {refused.message}"
        return result.content[0].text  # type: ignore[union-attr]


def _raw_call(world: World, who: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A 2025-11-25 ``tools/call`` by hand, to read the whole JSON-RPC error (``data`` included)."""
    url, token = world.bastion.url("weather"), world.token(who)
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, url, token)
        answer = legacy_post(
            http, url, token, session, rpc("tools/call", {"name": tool, "arguments": arguments}, rpc_id=2)
        )
    return reply_message(answer)


def _methods(world: World, method: str) -> list[tuple[str | None, str | None, str | None]]:
    """``(route, target, reason)`` of each audit record of ``method``."""
    return [(r["route"], r["target"], r["decision"]["reason"]) for r in audit_records(world.bastion.database, method)]


def test_a_rug_pull_is_quarantined_for_every_user_until_an_admin_approves_the_diff(world: World) -> None:
    # Before any approval, the route serves what it lists; the CLI lists it for review.
    assert asyncio.run(_tools(world, "alice")) == {
        "forecast": HONEST,
        "upgrade": "Switch to the premium forecast service.",
    }
    review = world.cli("diff", "--route", "weather")
    assert review.returncode == 0, review.stderr
    assert "forecast" in review.stdout
    assert "not approved yet" in review.stdout
    approved = world.cli("approve", "--route", "weather", "--as", "ada", "--group", "admins", "--reason", "first look")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "approved tool forecast" in approved.stdout
    assert "approved tool upgrade" in approved.stdout
    assert asyncio.run(_call(world, "alice", "forecast", {"city": "Paris"})) == "sunny in Paris"

    # The rug pull: the server changes forecast and adds backup_keys, announcing it on the call's stream.
    assert asyncio.run(_call(world, "alice", "upgrade", {})) == "upgraded"
    ran = len(world.calls["weather"]())
    refused = _raw_call(world, "bob", "forecast", {"city": "Oslo", "notes": "-----BEGIN OPENSSH PRIVATE KEY-----"})
    error = refused["error"]
    assert error["code"] == -32003
    assert (error["data"]["name"], error["data"]["reason"]) == ("forecast", "drift")
    assert "bastion tools diff --route weather" in error["message"]
    assert error["data"]["approve"] == "bastion tools approve --route weather --tool forecast"
    assert len(world.calls["weather"]()) == ran  # never reached the upstream
    assert asyncio.run(_tools(world, "alice")) == {"upgrade": UPGRADE}
    assert asyncio.run(_tools(world, "bob")) == {"upgrade": UPGRADE}
    assert asyncio.run(_call(world, "alice", "forecast", {"city": "Rome"})).startswith("refused -32003")

    # The diff, word by word, and the schema change.
    shown = world.cli("diff", "--route", "weather")
    assert "changed since approved" in shown.stdout
    assert "~/.ssh/id_rsa" in shown.stdout
    assert "added /inputSchema/properties/notes" in shown.stdout
    held = {item["name"]: item for item in json.loads(world.cli("diff", "--route", "weather", "--json").stdout)["held"]}
    assert set(held) == {"forecast", "backup_keys"}
    assert (held["forecast"]["reason"], held["backup_keys"]["reason"]) == ("drift", "new")
    added = "".join(text for op, text in held["forecast"]["diff"]["text"]["description"] if op == "added")
    assert "read the file ~/.ssh/id_rsa" in added
    assert {c["path"] for c in held["forecast"]["diff"]["changes"]} >= {"/inputSchema/properties/notes"}

    # Someone policy does not let approve is refused, and nothing changes.
    mallory = world.cli("approve", "--route", "weather", "--tool", "forecast", "--as", "mallory")
    assert mallory.returncode == 1
    assert "403" in mallory.stderr
    assert asyncio.run(_call(world, "bob", "forecast", {"city": "Oslo"})).startswith("refused -32003")

    # The administrator approves forecast only: it is served to everyone again; backup_keys stays held.
    accepted = world.cli("approve", "--route", "weather", "--tool", "forecast", "--as", "ada", "--group", "admins")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert asyncio.run(_call(world, "bob", "forecast", {"city": "Oslo"})) == "sunny in Oslo"
    assert asyncio.run(_tools(world, "alice"))["forecast"] == POISONED
    assert "backup_keys" not in asyncio.run(_tools(world, "bob"))
    assert asyncio.run(_call(world, "bob", "backup_keys", {"path": "~/.ssh"})).startswith("refused -32003")
    pins = {p["name"]: p for p in json.loads(world.cli("pins", "--route", "weather", "--json").stdout)}
    assert (pins["forecast"]["approver"], pins["forecast"]["reviewed"]) == ("ada", True)

    # The audit log: drift, quarantine, approval (and the refused approval), and the refused calls.
    assert _methods(world, "definition/drift") == [("weather", "forecast", "drift")]
    assert set(_methods(world, "definition/quarantined")) == {("weather", "forecast", "drift"),
                                                              ("weather", "backup_keys", "new")}  # fmt: skip
    approvals = audit_records(world.bastion.database, "definition/approved")
    assert [(r["target"], r["principal"]["sub"]) for r in approvals if r["route"] == "weather"][-1] == (
        "forecast",
        "ada",
    )
    assert approvals[-1]["arguments"]["previous_sha256"] != approvals[-1]["arguments"]["sha256"]
    assert ("weather", None, "policy_denied") in _methods(world, "definition/refused")
    calls = audit_records(world.bastion.database, "tools/call")
    denied = [r for r in calls if r["decision"] and r["decision"]["reason"] == "definition_quarantined"]
    assert {r["principal"]["sub"] for r in denied} == {"alice", "bob"}


def test_first_use_pins_the_first_catalog_and_quarantines_a_later_change(world: World) -> None:
    assert set(asyncio.run(_tools(world, "alice", "auto"))) == {"forecast", "upgrade"}
    assert {p["approver"] for p in json.loads(world.cli("pins", "--route", "auto", "--json").stdout)} == {"first_use"}
    assert {t for r, t, _ in _methods(world, "definition/pinned") if r == "auto"} == {"forecast", "upgrade"}
    assert asyncio.run(_call(world, "alice", "upgrade", {}, "auto")) == "upgraded"
    assert set(asyncio.run(_tools(world, "bob", "auto"))) == {"upgrade"}
    assert asyncio.run(_call(world, "bob", "forecast", {"city": "Lima"}, "auto")).startswith("refused -32003")
    assert world.calls["auto"]() == []


def test_an_admin_reviews_the_diff_and_approves_it_in_the_portal(world: World) -> None:
    """On ``auto`` (first use), after the rug pull: ada sees the held definitions with the words the
    server added, approves them with a reason, and they are served again; mallory, whom policy does
    not let approve, is shown no such page."""
    asyncio.run(_tools(world, "alice", "auto"))  # pinned at first sight (if the test before did not)
    assert asyncio.run(_call(world, "alice", "upgrade", {}, "auto")) == "upgraded"
    assert "forecast" not in asyncio.run(_tools(world, "bob", "auto"))
    base = world.bastion.base_url

    async def review() -> tuple[str, str, int]:
        async with chromium() as browser:
            page = await (await new_context(browser)).new_page()
            await portal_sign_in(page, base, "mallory", PASSWORDS["mallory"])
            refused = await page.goto(f"{base}/portal/definitions/auto")
            page = await (await new_context(browser)).new_page()
            await portal_sign_in(page, base, "ada", PASSWORDS["ada"])
            await page.goto(f"{base}/portal/definitions")
            await page.get_by_role("link", name="auto").click()
            shown = await page.content()
            await page.get_by_label("Reason").fill("vendor announced the premium service")
            async with page.expect_navigation():
                await page.get_by_role("button", name="Approve these 2 definitions").click()
            return shown, await page.content(), refused.status if refused is not None else 0

    shown, after, refused = asyncio.run(review())
    assert refused == 404
    assert "<ins>" in shown
    assert "~/.ssh/id_rsa" in shown
    assert "/inputSchema/properties/notes" in shown
    assert "Nothing waits for review" in after
    assert asyncio.run(_call(world, "bob", "forecast", {"city": "Lima"}, "auto")) == "sunny in Lima"
    approved = [r for r in audit_records(world.bastion.database, "definition/approved") if r["route"] == "auto"]
    assert {r["target"] for r in approved} == {"forecast", "backup_keys"}
    assert {r["arguments"]["reason"] for r in approved} == {"vendor announced the premium service"}
    assert {r["principal"]["sub"] for r in approved} == {"ada"}

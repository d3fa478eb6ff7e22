"""Approvals through a real ``bastion serve``: a call a policy marks ``@approval("review")`` runs only
after another person approved exactly that call, once.

Real processes on loopback: the ledger MCP server (``tests/support/ledger_server``: it counts the
``deploy`` calls it carries out), ``bastion serve`` twice (``held``: calls wait up to 30 s for a
decision; ``quick``: no hold and a ``QUICK_TTL_S`` lifetime, for retries and expiry), the official SDK client,
headless Chromium for the approver, ``bastion approvals`` for the CLI. People: rita (dev) asks,
alex (ops) approves, mallory (dev) may not approve, olive (dev and ops) may not approve her own.
``restart`` needs the requester's own confirmation (``@approval("confirm")``): by the URL
elicitation error (-32042) for 2025-11-25 clients, by a multi round-trip with Bastion's sealed
``requestState`` for 2026-07-28 ones.

Every refusal is checked three ways: the answer, that the ledger did not move, and the audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp import MCPError
from tests.support.bastion_process import BastionProcess, write_users_file
from tests.support.browser import chromium
from tests.support.browser_people import LoopbackSite, new_context, portal_sign_in
from tests.support.e2e_helpers import connect, modern_post, reply_message
from tests.support.ledger_server import ledger_server

pytestmark = pytest.mark.e2e

QUICK_TTL_S = 12
"""The quick gateway's request and grant lifetime (s): long enough for a CLI run (its start-up alone takes
seconds on a loaded 2-core machine) between a request and its retry, short enough to wait out."""

POLICY = """
@id("dev-deploy") @approval("review")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");

@id("dev-restart") @approval("confirm")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/restart");

@id("anyone-status")
permit (principal, action == Action::"tools/call", resource == Tool::"ledger/status");

@id("ops-decide")
permit (principal in Group::"ops", action == Action::"approvals/decide", resource is Approval)
when { resource.route == "ledger" && resource.risk == "destructive" };
"""
PASSWORDS = {name: f"{name}'s long passphrase" for name in ("alex", "mallory", "rita")}
MODE = "legacy"


@dataclass
class World:
    held: BastionProcess
    quick: BastionProcess
    ledger: Callable[[], list[dict[str, Any]]]

    def token(self, bastion: BastionProcess, who: str) -> str:
        groups = {"rita": ("dev",), "alex": ("ops",), "mallory": ("dev",), "olive": ("dev", "ops")}[who]
        return bastion.mint(who, "ledger", *groups, email=f"{who}@example.com")


def _bastion(workdir: Any, url: str, approvals: dict[str, Any]) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "approvals.cedar").write_text(POLICY, encoding="utf-8")
    users = write_users_file(workdir, {name: (password, ["ops"] if name == "alex" else ["dev"])
                                       for name, password in PASSWORDS.items()})  # fmt: skip
    config = {
        "identity": {"authorization_server": {"users_file": users, "scopes": ["mcp"], "default_scopes": ["mcp"]}},
        "policy": {"files": [str(workdir / "approvals.cedar")]},
        "approvals": approvals,
        "routes": [{
            "name": "ledger", "http": {"url": url, "allow_http": True, "allow": ["127.0.0.1"]},
            "tools": {"deploy": {"risk": "destructive", "owner": "platform"}, "status": {"risk": "read"},
                      "restart": {"risk": "destructive", "owner": "platform"}},
        }],
    }  # fmt: skip
    return BastionProcess(workdir, config)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("approvals")
    with ledger_server() as (url, ledger):
        held = _bastion(root / "held", url, {"hold": "30s", "ttl": "15m"})
        quick = _bastion(root / "quick", url, {"hold": 0, "ttl": f"{QUICK_TTL_S}s"})
        with held, quick:
            yield World(held, quick, ledger)


# helpers
async def sign_in(page: Any, base: str, name: str) -> None:
    """Sign ``name`` in at the portal with the password form, in Chromium."""
    await portal_sign_in(page, base, name, PASSWORDS[name])


def pending_ids(bastion: BastionProcess) -> list[str]:
    with sqlite3.connect(bastion.database) as db:
        return [r[0] for r in db.execute("SELECT id FROM approvals WHERE status = 'pending' ORDER BY created_at")]


def records(bastion: BastionProcess, method: str) -> list[dict[str, Any]]:
    with sqlite3.connect(bastion.database) as db:
        rows = db.execute(
            "SELECT record FROM audit_events WHERE json_extract(record, '$.method') = ? ORDER BY seq", (method,)
        ).fetchall()
    return [json.loads(row[0]) for row in rows]


def call_records(bastion: BastionProcess, approval_id: str) -> list[dict[str, Any]]:
    """The records of calls that used grant ``approval_id``: decision (allow) and outcome."""
    return [
        r for r in records(bastion, "tools/call")
        if (r.get("approval") or {}).get("id") == approval_id and r["approval"]["status"] == "consumed"
    ]  # fmt: skip


def refused_call(bastion: BastionProcess, approval_id: str) -> dict[str, Any]:
    """The one deny record of the call that asked for (and now waits for) approval ``approval_id``."""
    [record] = [
        r for r in records(bastion, "tools/call")
        if (r.get("approval") or {}).get("id") == approval_id and r["decision"]["effect"] == "deny"
    ]  # fmt: skip
    assert (record["decision"]["reason"], record["approval"]["status"]) == ("approval_pending", "pending")
    return record


def decide(bastion: BastionProcess, token: str, approval_id: str, decision: str, reason: str) -> httpx2.Response:
    """The portal API's decision, as ``bastion approvals approve`` sends it."""
    return httpx2.post(
        f"{bastion.base_url}/portal/api/approvals/{approval_id}",
        json={"decision": decision, "reason": reason},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


async def deploy(world: World, bastion: BastionProcess, arguments: dict[str, str], **kwargs: Any) -> Any:
    async with connect(bastion.url("ledger"), world.token(bastion, "rita"), MODE) as client:
        return await client.call_tool("deploy", arguments, **kwargs)


def pending_of(result: Any) -> dict[str, Any]:
    """The structured content of the "approval pending" tool error."""
    assert result.is_error, result
    error: dict[str, Any] = result.structured_content["error"]
    assert (error["reason"], error["status"]) == ("approval_pending", "pending"), error
    return error


def test_a_held_call_runs_once_after_an_approver_approves_it_in_chromium(world: World) -> None:
    bastion = world.held
    before = len(world.ledger())
    progress: list[str] = []

    async def scenario() -> Any:
        first_progress = asyncio.Event()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")
            first_progress.set()

        call = asyncio.create_task(deploy(world, bastion, {"service": "api", "env": "prod"},
                                          progress_callback=on_progress))  # fmt: skip
        await asyncio.wait_for(first_progress.wait(), 15)  # notifications/progress while the call is held
        [approval_id] = pending_ids(bastion)
        assert approval_id in progress[0]
        assert len(world.ledger()) == before  # nothing ran yet
        async with chromium() as browser:
            page = await (await new_context(browser)).new_page()
            base = bastion.base_url
            await sign_in(page, base, "alex")
            await page.goto(f"{base}/portal/approvals")
            await page.get_by_role("link", name="deploy").first.click()
            text = await page.content()
            assert "rita@example.com" in text
            assert "prod" in text
            assert "dev-deploy" in text
            await page.get_by_label("Reason").fill("change ticket 42")
            async with page.expect_navigation():
                await page.get_by_role("button", name="Approve", exact=True).click()
            shown = await page.content()  # approved, or consumed already by the held call
            assert "approved by alex" in shown or "consumed by alex" in shown
        return approval_id, await asyncio.wait_for(call, 30)

    approval_id, result = asyncio.run(scenario())
    assert not result.is_error
    assert result.content[0].text == "deployed api to prod"
    assert world.ledger()[before:] == [{"service": "api", "env": "prod"}]
    steps = [r["method"] for r in records(bastion, "approval/requested") + records(bastion, "approval/approved")
             + records(bastion, "approval/consumed") if r["approval"]["id"] == approval_id]  # fmt: skip
    assert steps == ["approval/requested", "approval/approved", "approval/consumed"]
    [approved] = [r for r in records(bastion, "approval/approved") if r["approval"]["id"] == approval_id]
    assert approved["principal"]["sub"] == "alex"
    assert approved["approval"]["reason"] == "change ticket 42"
    decision, outcome = call_records(bastion, approval_id)[-2:]
    assert (decision["kind"], decision["decision"]["effect"], decision["approval"]["status"]) == (
        "decision", "allow", "consumed")  # fmt: skip
    assert decision["approval"]["approver"] == "alex"
    assert outcome["kind"] == "outcome"
    assert outcome["decision_id"] == decision["decision_id"]


def test_a_held_call_runs_once_after_an_approver_approves_it_with_the_cli(world: World) -> None:
    bastion = world.held
    before = len(world.ledger())
    earlier = set(pending_ids(bastion))

    async def scenario() -> Any:
        call = asyncio.create_task(deploy(world, bastion, {"service": "worker", "env": "prod"}))
        deadline = time.monotonic() + 20
        while not (waiting := [i for i in pending_ids(bastion) if i not in earlier]):
            assert time.monotonic() < deadline, "no approval request"
            await asyncio.sleep(0.1)
        approved = await asyncio.to_thread(
            bastion.cli, "approvals", "approve", waiting[0], "--config", str(bastion.config_path),
            "--reason", "on call", "--as", "alex", "--group", "ops", check=False,
        )  # fmt: skip
        assert approved.returncode == 0, approved.stdout + approved.stderr
        return await asyncio.wait_for(call, 30)

    result = asyncio.run(scenario())
    assert not result.is_error
    assert result.content[0].text == "deployed worker to prod"
    assert world.ledger()[before:] == [{"service": "worker", "env": "prod"}]


def test_pending_then_approved_by_the_cli_then_the_same_call_runs_once(world: World) -> None:
    bastion = world.quick
    before = len(world.ledger())
    arguments = {"service": "billing", "env": "prod"}
    first = asyncio.run(deploy(world, bastion, arguments))
    error = pending_of(first)
    assert error["url"] == f"{bastion.base_url}/portal/approvals/{error['approval']}"
    assert error["approval"] in first.content[0].text
    assert error["policies"] == ["dev-deploy"]
    approved = bastion.cli("approvals", "approve", error["approval"], "--config", str(bastion.config_path),
                           "--reason", "planned", "--as", "alex", "--group", "ops", check=False)  # fmt: skip
    assert approved.returncode == 0, approved.stdout + approved.stderr
    second = asyncio.run(deploy(world, bastion, arguments))
    assert not second.is_error
    assert second.content[0].text == "deployed billing to prod"
    # The grant is single use: the same call again is a new request, and nothing runs.
    third = asyncio.run(deploy(world, bastion, arguments))
    assert pending_of(third)["approval"] != error["approval"]
    refused_call(bastion, pending_of(third)["approval"])
    assert world.ledger()[before:] == [arguments]


def _approved_grant(world: World, arguments: dict[str, str]) -> str:
    """A grant for rita's ``deploy(arguments)`` on ``quick``, approved by alex and not used yet."""
    approval_id = pending_of(asyncio.run(deploy(world, world.quick, arguments)))["approval"]
    answer = decide(world.quick, world.token(world.quick, "alex"), approval_id, "approve", "ok")
    assert answer.status_code == 200, answer.text
    return approval_id


def test_changed_arguments_need_a_new_approval(world: World) -> None:
    before = len(world.ledger())
    granted = _approved_grant(world, {"service": "api", "env": "staging"})
    changed = asyncio.run(deploy(world, world.quick, {"service": "api", "env": "prod"}))
    assert pending_of(changed)["approval"] != granted
    assert refused_call(world.quick, pending_of(changed)["approval"])["arguments"] == {"service": "api", "env": "prod"}
    assert len(world.ledger()) == before
    assert call_records(world.quick, granted) == []  # the grant was not used by any call


def test_an_expired_grant_is_not_used(world: World) -> None:
    before = len(world.ledger())
    arguments = {"service": "search", "env": "prod"}
    granted = _approved_grant(world, arguments)
    time.sleep(QUICK_TTL_S + 0.5)  # the quick gateway's grants live QUICK_TTL_S
    again = asyncio.run(deploy(world, world.quick, arguments))
    assert pending_of(again)["approval"] != granted
    refused_call(world.quick, pending_of(again)["approval"])
    assert len(world.ledger()) == before
    deadline = time.monotonic() + 10  # the sweeper marks it within 5 s
    while not [r for r in records(world.quick, "approval/expired") if r["approval"]["id"] == granted]:
        assert time.monotonic() < deadline, "no approval/expired record"
        time.sleep(0.25)


@pytest.mark.parametrize(("who", "status", "code"), [("olive", 403, "own_request"), ("mallory", 403, "policy_denied")])
def test_who_may_not_decide_is_refused_and_recorded(world: World, who: str, status: int, code: str) -> None:
    bastion = world.quick
    before = len(world.ledger())

    async def olive_deploys() -> Any:
        async with connect(bastion.url("ledger"), world.token(bastion, who), MODE) as client:
            return await client.call_tool("deploy", {"service": f"{who}-svc", "env": "prod"})

    if who == "olive":  # olive asks, and may decide approvals, but not her own
        approval_id = pending_of(asyncio.run(olive_deploys()))["approval"]
    else:
        approval_id = pending_of(asyncio.run(deploy(world, bastion, {"service": "m", "env": "prod"})))["approval"]
    answer = decide(bastion, world.token(bastion, who), approval_id, "approve", "looks fine to me")
    assert (answer.status_code, answer.json()["error"]) == (status, code)
    assert approval_id in pending_ids(bastion)
    refused = [r for r in records(bastion, "approval/refused") if r["approval"]["id"] == approval_id]
    assert [(r["principal"]["sub"], r["decision"]["reason"]) for r in refused] == [(who, code)]
    assert len(world.ledger()) == before


def test_a_cross_site_form_decides_nothing(world: World) -> None:
    bastion = world.quick
    approval_id = pending_of(asyncio.run(deploy(world, bastion, {"service": "forged", "env": "prod"})))["approval"]
    target = f"{bastion.base_url}/portal/approvals/{approval_id}"
    forged = (
        f'<form id="f" method="post" action="{target}">'
        '<input type="hidden" name="csrf_token" value="guessed">'
        '<input type="hidden" name="decision" value="approve"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )

    async def scenario() -> int:
        async with LoopbackSite({"/forged": forged}) as attacker, chromium() as browser:
            page = await (await new_context(browser)).new_page()
            base = bastion.base_url
            await sign_in(page, base, "alex")
            async with page.expect_response(lambda r: r.url == target and r.request.method == "POST") as answered:
                await page.goto(attacker.url("/forged", host="localhost"))
            return (await answered.value).status

    assert asyncio.run(scenario()) == 400
    assert approval_id in pending_ids(bastion)
    refused = [r for r in records(bastion, "approval/refused") if r["approval"]["id"] == approval_id]
    assert [r["decision"]["reason"] for r in refused] == ["form"]


def test_pending_requests_survive_a_restart(world: World) -> None:
    bastion = world.held

    earlier = set(pending_ids(bastion))
    token = world.token(bastion, "rita")  # minted before: a CLI run takes seconds on a loaded machine

    async def walk_away() -> list[str]:  # rita's client gives up once her call is held
        async def call() -> Any:
            async with connect(bastion.url("ledger"), token, MODE) as client:
                return await client.call_tool("deploy", {"service": "later", "env": "prod"})

        held = asyncio.create_task(call())
        deadline = time.monotonic() + 30
        while not (new := [i for i in pending_ids(bastion) if i not in earlier]):
            assert time.monotonic() < deadline, "no approval request"
            assert not held.done(), held.result()
            await asyncio.sleep(0.1)
        held.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await held
        return new

    [waiting] = asyncio.run(walk_away())
    bastion.stop()
    bastion.start()
    assert waiting in pending_ids(bastion)
    answer = decide(bastion, world.token(bastion, "alex"), waiting, "deny", "not today")
    assert answer.status_code == 200
    assert answer.json()["approval"]["status"] == "denied"


def test_a_policy_change_voids_an_approved_grant(world: World) -> None:
    bastion = world.quick
    before = len(world.ledger())
    arguments = {"service": "ledger", "env": "prod"}
    granted = _approved_grant(world, arguments)
    bastion.stop()
    policy = bastion.workdir / "approvals.cedar"
    policy.write_text(policy.read_text() + '\n@id("extra") forbid (principal, action, resource) when { false };\n')
    bastion.start()
    again = asyncio.run(deploy(world, bastion, arguments))
    assert pending_of(again)["approval"] != granted  # approved under another policy set
    approved = next(r for r in records(bastion, "approval/approved") if r["approval"]["id"] == granted)
    refused = refused_call(bastion, pending_of(again)["approval"])
    assert refused["decision"]["policy_version"] != approved["decision"]["policy_version"]
    assert len(world.ledger()) == before
    assert call_records(bastion, granted) == []


def test_confirm_through_the_url_elicitation_error_and_chromium(world: World) -> None:
    bastion = world.held  # confirmations are not held; its grants live long
    before = len(world.ledger())

    async def scenario() -> Any:
        async with connect(bastion.url("ledger"), world.token(bastion, "rita"), MODE) as client:
            with pytest.raises(MCPError) as asked:
                await client.call_tool("restart", {"service": "api"})
            assert asked.value.code == -32042  # URL elicitation required (MCP 2025-11-25)
            [elicitation] = asked.value.data["elicitations"]
            assert elicitation["mode"] == "url"
            assert elicitation["url"] == f"{bastion.base_url}/portal/approvals/{elicitation['elicitationId']}"
            assert len(world.ledger()) == before
            async with chromium() as browser:  # rita opens the URL and confirms, as a host would let her
                page = await (await new_context(browser)).new_page()
                await sign_in(page, bastion.base_url, "rita")
                await page.goto(elicitation["url"])
                await page.get_by_label("Reason").fill("yes, that was me")
                async with page.expect_navigation():
                    await page.get_by_role("button", name="Confirm", exact=True).click()
            return await client.call_tool("restart", {"service": "api"}), elicitation["elicitationId"]

    result, approval_id = asyncio.run(scenario())
    assert not result.is_error
    assert result.content[0].text == "restarted api"
    assert world.ledger()[before:] == [{"restart": "api"}]
    [confirmed] = [r for r in records(bastion, "approval/approved") if r["approval"]["id"] == approval_id]
    assert confirmed["principal"]["sub"] == "rita"  # the requester herself
    assert call_records(bastion, approval_id)


def test_nobody_but_the_requester_confirms(world: World) -> None:
    bastion = world.quick
    with httpx2.Client(timeout=10) as http:
        asked = reply_message(modern_post(http, bastion.url("ledger"), world.token(bastion, "rita"), "tools/call",
                                          {"name": "restart", "arguments": {"service": "db"}}))  # fmt: skip
    approval_id = asked["result"]["inputRequests"]["bastion_confirmation"]["params"]["elicitationId"]
    answer = decide(bastion, world.token(bastion, "alex"), approval_id, "approve", "I can approve anything")
    assert (answer.status_code, answer.json()["error"]) == (403, "not_requester")


def test_confirm_through_a_multi_round_trip_with_a_sealed_request_state(world: World) -> None:
    bastion = world.held  # confirmations are not held; its grants live long
    before = len(world.ledger())
    url, rita, mallory = bastion.url("ledger"), world.token(bastion, "rita"), world.token(bastion, "mallory")
    call = {"name": "restart", "arguments": {"service": "cache"}}
    with httpx2.Client(timeout=10) as http:
        asked = reply_message(modern_post(http, url, rita, "tools/call", call))["result"]
        assert asked["resultType"] == "input_required"
        request = asked["inputRequests"]["bastion_confirmation"]
        assert request["method"] == "elicitation/create"
        assert request["params"]["mode"] == "url"  # never form mode: the client or the model could answer that
        approval_id, state = request["params"]["elicitationId"], asked["requestState"]
        retry = {**call, "requestState": state, "inputResponses": {"bastion_confirmation": {"action": "accept"}}}
        assert decide(bastion, rita, approval_id, "approve", "confirmed").status_code == 200

        tampered = {**retry, "requestState": state[:-2] + ("AA" if not state.endswith("AA") else "BB")}
        other_arguments = {**retry, "arguments": {"service": "db"}}
        for who, params in ((rita, tampered), (rita, other_arguments), (mallory, retry)):
            refused = reply_message(modern_post(http, url, who, "tools/call", params))
            assert refused["error"]["code"] == -32602, refused
        assert len(world.ledger()) == before

        done = reply_message(modern_post(http, url, rita, "tools/call", retry))["result"]
        assert done["content"][0]["text"] == "restarted cache"
        replayed = reply_message(modern_post(http, url, rita, "tools/call", retry))
        assert replayed["error"]["code"] == -32602  # a state is good once
    assert world.ledger()[before:] == [{"restart": "cache"}]

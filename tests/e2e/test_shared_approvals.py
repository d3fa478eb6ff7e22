"""Approvals and definition pins shared by replicas (issue 17): two ``bastion serve`` processes, each
with its own data directory, ``stores.postgres`` pointing at one schema of the PostgreSQL on loopback.

A call a policy marks ``@approval("review")`` made through replica ``a`` is pending there; the
request is listed by ``bastion approvals`` with replica ``b``'s configuration, approved through
``b``'s portal API, and the same call through ``b`` then runs, once: the grant is consumed across
replicas, and the same call again (through either) is a new request. The ledger route pins its
definitions at first use: the pins replica ``a`` took are the ones ``bastion tools pins`` reads with
``b``'s configuration.

With ``stores.redis`` as well, a call held on replica ``a`` is released as soon as the decision is
taken through replica ``b`` (``bastion approvals approve`` against ``b``'s API): ``b`` announces it
on ``<prefix>approval-decided`` and ``a`` wakes its waiter. Both poll the store only every 30 s
there, so only the notification explains a release within seconds.

Real processes on loopback: the ledger MCP server, two gateways behind one public URL (as behind a
load balancer: the same issuer and audience) sharing one signing key file, the official SDK client,
the Redis on loopback (a key prefix of the test's own).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.support.bastion_process import BastionProcess, write_users_file
from tests.support.databases import POSTGRES_URL, REDIS_URL, delete_redis_keys
from tests.support.e2e_helpers import connect, wait_until
from tests.support.ledger_server import ledger_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("dev-deploy") @approval("review")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");

@id("ops-decide")
permit (principal in Group::"ops", action == Action::"approvals/decide", resource is Approval);
"""
PUBLIC_URL = "http://gateway.test"
PASSWORDS = {"alex": "alex's long passphrase", "rita": "rita's long passphrase"}


def replica(workdir: Path, ledger_url: str, schema: str, keys: Path, **extra: Any) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    users = write_users_file(workdir, {name: (password, ["ops"] if name == "alex" else ["dev"])
                                       for name, password in PASSWORDS.items()})  # fmt: skip
    return BastionProcess(workdir, {
        "server": {"public_url": PUBLIC_URL},
        "identity": {"signing_keys_file": str(keys),
                     "authorization_server": {"users_file": users, "scopes": ["mcp"], "default_scopes": ["mcp"]}},
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "approvals": {"hold": 0, "ttl": "15m", **extra.get("approvals", {})},
        "stores": {"postgres": {"url": POSTGRES_URL, "schema": schema}, **extra.get("stores", {})},
        "routes": [{"name": "ledger", "http": {"url": ledger_url, "allow_http": True, "allow": ["127.0.0.1"]},
                    "tools": {"deploy": {"risk": "destructive", "owner": "platform"}},
                    "definitions": {"pin": "first_use"}}],
    })  # fmt: skip


@contextmanager
def two_replicas(tmp_path: Path, ledger_url: str, schema: str,
                 **extra: Any) -> Iterator[tuple[BastionProcess, BastionProcess]]:  # fmt: skip
    keys = tmp_path / "secret" / "signing-keys.json"
    keys.parent.mkdir(mode=0o700)
    a, b = (replica(tmp_path / name, ledger_url, schema, keys, **extra) for name in ("a", "b"))
    a.cli("token", "rotate-keys", "--config", str(a.config_path))
    with a, b:
        yield a, b


async def deploy(bastion: BastionProcess, token: str, arguments: dict[str, str]) -> Any:
    async with connect(bastion.url("ledger"), token, "legacy") as client:
        return await client.call_tool("deploy", arguments)


def pending(result: Any) -> str:
    """The id of the approval the "approval pending" tool error names."""
    assert result.is_error, result
    error: dict[str, Any] = result.structured_content["error"]
    assert (error["reason"], error["status"]) == ("approval_pending", "pending"), error
    return str(error["approval"])


def test_a_call_approved_through_one_replica_runs_once_through_the_other(tmp_path: Path, schema: str) -> None:
    with ledger_server() as (ledger_url, ledger), two_replicas(tmp_path, ledger_url, schema) as (a, b):
        rita, alex = a.mint("rita", "ledger", "dev"), b.mint("alex", "ledger", "ops", email="alex@example.com")
        arguments = {"service": "billing", "env": "prod"}
        approval_id = pending(asyncio.run(deploy(a, rita, arguments)))
        listed = b.cli("approvals", "list", "--config", str(b.config_path), "--json")
        assert [r["id"] for r in json.loads(listed.stdout)] == [approval_id]  # b's CLI reads PostgreSQL
        decided = httpx2.post(f"{b.base_url}/portal/api/approvals/{approval_id}", timeout=10,
                              json={"decision": "approve", "reason": "planned"},
                              headers={"authorization": f"Bearer {alex}"})  # fmt: skip
        assert decided.status_code == 200, decided.text
        ran = asyncio.run(deploy(b, rita, arguments))  # the grant made on a, used on b
        assert not ran.is_error, ran
        assert ledger() == [arguments]
        again = [pending(asyncio.run(deploy(g, rita, arguments))) for g in (a, b)]  # single use, everywhere
        assert approval_id not in again
        assert again[0] == again[1]  # one new request, found by the other replica
        assert ledger() == [arguments]
        shown = json.loads(a.cli("approvals", "show", approval_id, "--config", str(a.config_path), "--json").stdout)
        assert (shown["status"], shown["approver"]) == ("consumed", "alex@example.com")


def test_pins_taken_by_one_replica_are_read_with_the_other_s_configuration(tmp_path: Path, schema: str) -> None:
    with ledger_server() as (ledger_url, _ledger), two_replicas(tmp_path, ledger_url, schema) as (a, b):
        rita = a.mint("rita", "ledger", "dev")

        async def tools(gateway: BastionProcess) -> list[str]:
            async with connect(gateway.url("ledger"), rita, "legacy") as client:
                return sorted(tool.name for tool in (await client.list_tools()).tools)

        listed = asyncio.run(tools(a))
        assert "deploy" in listed
        pins = json.loads(b.cli("tools", "pins", "--route", "ledger", "--json", "--config", str(b.config_path)).stdout)
        assert set(listed) <= {p["name"] for p in pins if p["kind"] == "tool"}  # the whole catalog, before policy
        assert {p["approver"] for p in pins} == {"first_use"}
        assert asyncio.run(tools(b)) == listed  # b serves what a pinned


LONG_POLL_S = 30
"""The replicas re-read a held call's request this seldom: only the notification explains a prompt release."""
PROMPT_S = 10.0


def test_a_call_held_on_one_replica_is_released_at_once_by_a_decision_through_the_other(
    tmp_path: Path, schema: str
) -> None:
    prefix = f"bastion-test:{uuid.uuid4().hex}:"
    shared = {"approvals": {"hold": 120, "poll": f"{LONG_POLL_S}s"},
              "stores": {"redis": {"url": REDIS_URL, "prefix": prefix}}}  # fmt: skip
    try:
        with ledger_server() as (ledger_url, ledger), two_replicas(tmp_path, ledger_url, schema, **shared) as (a, b):
            rita = a.mint("rita", "ledger", "dev")
            arguments = {"service": "billing", "env": "prod"}
            ended: dict[str, Any] = {}

            def held_call() -> None:
                ended["result"] = asyncio.run(deploy(a, rita, arguments))
                ended["at"] = time.monotonic()

            caller = threading.Thread(target=held_call, daemon=True)
            sent = time.monotonic()
            caller.start()
            listing = ("approvals", "list", "--status", "pending", "--json", "--config", str(b.config_path))
            approval_id = wait_until(lambda: json.loads(b.cli(*listing).stdout), timeout_s=30)[0]["id"]
            assert caller.is_alive()
            assert "result" not in ended  # held on a
            b.cli("approvals", "approve", approval_id, "--reason", "planned", "--as", "alex", "--email",
                  "alex@example.com", "--group", "ops", "--url", b.base_url,
                  "--config", str(b.config_path))  # fmt: skip
            decided = time.monotonic()
            caller.join(PROMPT_S)
            assert not caller.is_alive(), f"the held call was not released within {PROMPT_S} s of the decision"
            assert not ended["result"].is_error, ended["result"]
            assert ledger() == [arguments]  # it ran once, on a, with the grant decided on b
            assert ended["at"] - decided < PROMPT_S
            assert ended["at"] - sent < LONG_POLL_S  # before a's first re-read of the request
        shown = json.loads(a.cli("approvals", "show", approval_id, "--config", str(a.config_path), "--json").stdout)
        assert (shown["status"], shown["approver"]) == ("consumed", "alex@example.com")
    finally:
        asyncio.run(delete_redis_keys(prefix))

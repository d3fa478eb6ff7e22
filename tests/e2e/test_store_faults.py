"""Faults of the shared stores through a real ``bastion serve`` (issue 17, "Fault tests"): the audit table refusing
writes, and the sessions' Redis stopped. Each fails closed (no call forwarded without its decision record),
recovers once the store is back with nothing done by hand, and the upstream carried out exactly as many calls as
the log has outcome records for. (PostgreSQL stopped as by a crash is ``test_shared_stores.py``'s.)

Real processes on loopback: the ledger MCP server (it keeps every call it carried out), ``bastion serve`` on the
PostgreSQL every machine of ours runs (a schema of the test's own) and on Redis (the shared one, or a private
``redis-server`` the test stops and starts), raw requests.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import pytest
from tests.support.bastion_process import BastionProcess, free_port, stop
from tests.support.databases import POSTGRES_URL, private_redis
from tests.support.e2e_helpers import legacy_post, modern_post, open_session, reply_message, rpc, wait_until
from tests.support.ledger_server import ledger_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("dev-deploy")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");
"""


async def _sql(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _fetch(statement: str) -> list[Any]:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        return [tuple(row) for row in await connection.fetch(statement)]
    finally:
        await connection.close()


def _gateway(workdir: Path, ledger_url: str, stores: dict[str, Any]) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    return BastionProcess(workdir, {
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "stores": stores,
        "routes": [{"name": "ledger", "http": {"url": ledger_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
    })  # fmt: skip


def _deploy(bastion: BastionProcess, token: str, service: str) -> httpx2.Response:
    with httpx2.Client(timeout=10) as http:
        params = {"name": "deploy", "arguments": {"service": service, "env": "prod"}}
        return modern_post(http, bastion.url("ledger"), token, "tools/call", params)


def _outcomes(schema: str) -> list[str]:
    """The ``tools/call`` outcome records' error codes (``None``: no error), in ``seq`` order."""
    rows = asyncio.run(_fetch(f'SELECT record FROM "{schema}".audit_events ORDER BY seq'))  # noqa: S608 - our schema
    records = [json.loads(row[0]) for row in rows]
    return [r["result"]["error_code"] for r in records if r["kind"] == "outcome" and r["method"] == "tools/call"]


def test_an_audit_table_refusing_writes_refuses_every_call_until_it_accepts_them_again(
    tmp_path: Path, schema: str
) -> None:
    refuse = f"""
        CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN RAISE EXCEPTION 'audit_events is read-only now'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".audit_events
            FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();
    """
    with ledger_server() as (ledger_url, ledger):
        stores = {"postgres": {"url": POSTGRES_URL, "schema": schema}}
        with _gateway(tmp_path / "gw", ledger_url, stores) as bastion:
            token = bastion.mint("rita", "ledger", "dev")
            before = [_deploy(bastion, token, f"before-{n}") for n in range(3)]
            asyncio.run(_sql(refuse))
            during = [_deploy(bastion, token, f"during-{n}") for n in range(4)]
            asyncio.run(_sql(f'DROP TRIGGER refuse ON "{schema}".audit_events'))
            wait_until(lambda: _deploy(bastion, token, "after").status_code == 200, timeout_s=20)
            assert [r.status_code for r in before] == [200] * 3
            assert [r.status_code for r in during] == [503] * 4
            assert {reply_message(r)["error"]["code"] for r in during} == {-32603}
            assert all("audit" in reply_message(r)["error"]["message"] for r in during), during[0].text
            carried = [entry["service"] for entry in ledger()]
            assert not [service for service in carried if service.startswith("during")]
            assert wait_until(lambda: len(_outcomes(schema)) == len(carried), timeout_s=10)
            verified = bastion.cli("audit", "verify", "--config", str(bastion.config_path))
            assert verified.stdout.startswith("OK"), verified.stdout + verified.stderr


def test_the_sessions_redis_stopped_refuses_session_calls_and_back_serves_new_sessions(
    tmp_path: Path, schema: str
) -> None:
    port = free_port()
    stores = {
        "postgres": {"url": POSTGRES_URL, "schema": schema},
        "redis": {"url": f"redis://127.0.0.1:{port}/0", "prefix": "bastion-e2e:"},  # a private Redis
    }
    calls = iter(range(1000))

    def call(http: httpx2.Client, bastion: BastionProcess, token: str, session: str) -> httpx2.Response:
        params = {"name": "deploy", "arguments": {"service": f"s-{next(calls)}", "env": "prod"}}
        return legacy_post(http, bastion.url("ledger"), token, session, rpc("tools/call", params))

    with (
        ledger_server() as (ledger_url, ledger),
        httpx2.Client(timeout=10) as http,
        private_redis(port) as redis,
        _gateway(tmp_path / "gw", ledger_url, stores) as bastion,
    ):
        token = bastion.mint("rita", "ledger", "dev")
        session = open_session(http, bastion.url("ledger"), token)
        up = [call(http, bastion, token, session) for _ in range(2)]
        stop(redis)
        down = [call(http, bastion, token, session) for _ in range(3)]
        assert len(ledger()) == 2  # nothing forwarded while the sessions cannot be read
        with private_redis(port):  # back, empty (no persistence): the client opens a new session
            fresh = wait_until(lambda: _try_open(http, bastion, token), timeout_s=20)
            again = call(http, bastion, token, fresh)
        assert [r.status_code for r in up] == [200, 200]
        assert [r.status_code for r in down] == [503] * 3
        assert {reply_message(r)["error"]["code"] for r in down} == {-32603}
        assert all("sessions cannot be looked up" in reply_message(r)["error"]["message"] for r in down), down[0].text
        assert again.status_code == 200
        assert len(ledger()) == 3
        assert wait_until(lambda: len(_outcomes(schema)) == 3, timeout_s=10)


def _try_open(http: httpx2.Client, bastion: BastionProcess, token: str) -> str | None:
    try:
        return open_session(http, bastion.url("ledger"), token)
    except AssertionError:
        return None

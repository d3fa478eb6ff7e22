"""Shared stores across replicas (issue 17): two ``bastion serve`` processes, each with its own data
directory, ``stores.postgres`` pointing at one schema of the PostgreSQL on loopback and
``stores.redis`` at the Redis on loopback (under a key prefix of the test's own). A token revoked
with ``bastion token revoke`` (the CLI of one replica's configuration) is refused by both within a
second; an MCP session (2025-11-25) opened through one replica continues on the other, and ends
for both when deleted through it; a session cap counts the calls made through both; a
configuration that declares several replicas (``stores.shared``) while stores are still embedded is
refused by ``bastion check`` and by ``bastion serve``, naming them.

Real processes on loopback: the ledger MCP server, two gateways behind one public URL (as behind a
load balancer: the same issuer and audience) sharing one signing key file, raw requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from redis import Redis
from tests.support.bastion_process import BASTION, BastionProcess, free_port, stop
from tests.support.databases import POSTGRES_URL, REDIS_URL, private_postgres, private_redis
from tests.support.e2e_helpers import (
    LEGACY_VERSION,
    jwt_payload,
    legacy_post,
    modern_post,
    open_session,
    raw_headers,
    reply_message,
    rpc,
    wait_until,
)
from tests.support.ledger_server import ledger_server
from tests.support.resumable_server import resumable_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("dev-deploy")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");
"""
PUBLIC_URL = "http://gateway.test"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of the test's own; its keys are deleted afterwards."""
    name = f"bastion-e2e:{uuid.uuid4().hex}:"
    yield name
    with Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{name}*"))
        if keys:
            client.delete(*keys)


def replica(workdir: Path, ledger_url: str, schema: str, prefix: str) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    return BastionProcess(workdir, {
        "server": {"public_url": PUBLIC_URL},
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "stores": {"postgres": {"url": POSTGRES_URL, "schema": schema}, "redis": {"url": REDIS_URL, "prefix": prefix}},
        "routes": [{"name": "ledger", "http": {"url": ledger_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
    })  # fmt: skip


def deploy(bastion: BastionProcess, token: str, service: str) -> httpx2.Response:
    with httpx2.Client(timeout=10) as http:
        params = {"name": "deploy", "arguments": {"service": service, "env": "prod"}}
        return modern_post(http, bastion.url("ledger"), token, "tools/call", params)


@contextmanager
def two_replicas(
    tmp_path: Path, ledger_url: str, schema: str, prefix: str, **extra: Any
) -> Iterator[tuple[BastionProcess, ...]]:
    """Replicas ``a`` and ``b`` running, with data directories of their own and one signing key file
    (``identity.signing_keys_file``, made by ``bastion token rotate-keys`` as an operator would);
    ``extra``: more top-level configuration keys for both."""
    a, b = (replica(tmp_path / name, ledger_url, schema, prefix) for name in ("a", "b"))
    keys = tmp_path / "secret" / "signing-keys.json"
    keys.parent.mkdir(mode=0o700)
    for each in (a, b):
        each.config["identity"] = {"signing_keys_file": str(keys)}
        each.config.update(extra)
        each.write_config()
    a.cli("token", "rotate-keys", "--config", str(a.config_path))
    with a, b:
        yield a, b


def test_a_token_revoked_once_is_refused_by_every_replica_within_a_second(
    tmp_path: Path, schema: str, prefix: str
) -> None:
    with ledger_server() as (ledger_url, ledger), two_replicas(tmp_path, ledger_url, schema, prefix) as (a, b):
        token = a.mint("rita", "ledger", "dev")
        assert [deploy(g, token, f"before-{g.port}").status_code for g in (a, b)] == [200, 200]
        jti = jwt_payload(token)["jti"]
        revoked = a.cli("token", "revoke", jti, "--config", str(a.config_path))
        assert jti in revoked.stdout
        started = time.monotonic()
        for gateway in (a, b):
            assert wait_until(lambda g=gateway: deploy(g, token, "after").status_code == 401, timeout_s=1.0)
        assert time.monotonic() - started < 2.0
        assert len(ledger()) == 2  # nothing after the revocation was forwarded
        assert wait_until(lambda: len(_denials(a)) >= 2, timeout_s=5)  # one per replica, in one log
        assert {(effect, reason) for effect, reason, _ in _denials(b)} == {("deny", "unauthenticated")}
        routes = {r["route"] for r in _records(a) if r["kind"] == "outcome"}
        assert routes == {"ledger"}
        verified = a.cli("audit", "verify", "--config", str(b.config_path))
        assert verified.stdout.startswith("OK"), verified.stdout  # one chain, written by both replicas


def test_a_session_opened_on_one_replica_continues_on_the_other(tmp_path: Path, schema: str, prefix: str) -> None:
    with ledger_server() as (ledger_url, ledger), two_replicas(tmp_path, ledger_url, schema, prefix) as (a, b):
        token = a.mint("sam", "ledger", "dev")
        with httpx2.Client(timeout=10) as http:
            session_id = open_session(http, a.url("ledger"), token)
            call = rpc("tools/call", {"name": "deploy", "arguments": {"service": "api", "env": "prod"}}, rpc_id=2)
            answer = legacy_post(http, b.url("ledger"), token, session_id, call)  # the other replica
            assert answer.status_code == 200, answer.text
            assert "result" in reply_message(answer)
            assert ledger() == [{"service": "api", "env": "prod"}]
            other = b.mint("tom", "ledger", "dev")  # another principal presenting the same session id
            assert legacy_post(http, b.url("ledger"), other, session_id, call).status_code == 404
            ended = http.delete(b.url("ledger"), headers={"authorization": f"Bearer {token}",
                                                          "mcp-session-id": session_id,
                                                          "mcp-protocol-version": "2025-11-25"})  # fmt: skip
            assert ended.status_code in (200, 204), ended.text
            assert legacy_post(http, a.url("ledger"), token, session_id, call).status_code == 404
            assert len(ledger()) == 1


def test_a_session_cap_counts_the_calls_made_through_every_replica(tmp_path: Path, schema: str, prefix: str) -> None:
    """Session caps in ``stores.redis``: stateless calls of one principal and client are one count,
    whichever replica each reaches; a cap of 3 admits 3 of the 6 calls made alternately."""
    with ledger_server() as (ledger_url, ledger), two_replicas(tmp_path, ledger_url, schema, prefix,
                                                               session_caps={"calls": 3}) as (a, b):  # fmt: skip
        token = a.mint("sam", "ledger", "dev")
        answers = [deploy(gateway, token, f"svc-{n}") for n, gateway in enumerate((a, b) * 3)]
        assert all(answer.status_code == 200 for answer in answers), [answer.text for answer in answers]
        refused = ["error" in reply_message(answer) for answer in answers]
        assert refused == [False, False, False, True, True, True]
        assert reply_message(answers[3])["error"]["data"] == {"cap": "calls", "limit": 3, "used": 3}
        assert len(ledger()) == 3


def _denials(gateway: BastionProcess) -> list[tuple[str, str | None, str | None]]:
    """``(effect, reason, target)`` of the tools/call denials in the shared audit log, through the CLI."""
    decisions = [r for r in _records(gateway) if r.get("method") == "tools/call" and r["kind"] == "decision"]
    return [(r["decision"]["effect"], r["decision"].get("reason"), r.get("target")) for r in decisions
            if r["decision"]["effect"] == "deny"]  # fmt: skip


def _records(gateway: BastionProcess) -> list[dict[str, Any]]:
    """Every record of the audit log ``gateway``'s configuration names (``bastion audit search --json``)."""
    found = gateway.cli("audit", "search", "--config", str(gateway.config_path), "--json")
    return [json.loads(line) for line in found.stdout.splitlines() if line.strip()]


def _run(tmp_path: Path, stores: dict[str, Any], *command: str) -> subprocess.CompletedProcess[str]:
    """``bastion COMMAND --config`` a configuration of one route (nothing listening there) and ``stores``."""
    config = {
        "data_dir": str(tmp_path / "data"),
        "server": {"port": 9},
        "policy": {"files": [str(tmp_path / "policy.cedar")]},
        "stores": stores,
        "routes": [{"name": "ledger", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True,
                                               "allow": ["127.0.0.1"]}}],
    }  # fmt: skip
    (tmp_path / "policy.cedar").write_text(POLICY, encoding="utf-8")
    path = tmp_path / "bastion.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return subprocess.run([BASTION, *command, "--config", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


def test_several_replicas_with_embedded_stores_are_refused(tmp_path: Path, schema: str) -> None:
    for command in (["check"], ["serve"]):
        done = _run(tmp_path, {"shared": True, "postgres": {"url": POSTGRES_URL, "schema": schema}}, *command)
        assert done.returncode != 0
        assert "stores.shared" in done.stderr
        assert "signing keys" in done.stderr
        assert "sessions" in done.stderr
        assert "revocations" not in done.stderr  # those shared are not named
        assert "audit log" not in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("stores", "named"),
    [
        ({"postgres": {"url": "postgresql://postgres@127.0.0.1:1/test"}}, "stores.postgres: cannot reach 127.0.0.1:1"),
        ({"postgres": {"url": POSTGRES_URL}, "redis": {"url": "redis://127.0.0.1:1/0"}},
         "stores.redis: cannot reach 127.0.0.1:1"),
    ],
)  # fmt: skip
def test_a_shared_store_that_does_not_answer_is_named_without_a_traceback(
    tmp_path: Path, schema: str, stores: dict[str, Any], named: str
) -> None:
    if "schema" not in stores["postgres"]:
        stores["postgres"]["schema"] = schema
    for command in (["serve"], ["token", "revoke", "some-jti"], ["audit", "verify"]):
        done = _run(tmp_path, stores, *command)
        assert done.returncode == 2, (command, done.stderr)
        assert named in done.stderr
        assert "Traceback" not in done.stderr + done.stdout


def test_readiness_follows_the_shared_stores(tmp_path: Path, schema: str) -> None:
    """``/readyz`` is 200 with every check "ok" while PostgreSQL and the sessions' Redis answer, 503
    naming the sessions' Redis while it is down (``/healthz`` stays 200: the process is alive), and
    200 again once it is back, with nothing done by hand."""
    port = free_port()
    with ledger_server() as (ledger_url, _), private_redis(port) as redis:
        bastion = replica(tmp_path / "a", ledger_url, schema, "e2e-ready:")
        bastion.config["stores"]["redis"]["url"] = f"redis://127.0.0.1:{port}/0"
        bastion.write_config()
        with bastion, httpx2.Client(timeout=10) as http:
            ready = http.get(f"{bastion.base_url}/readyz")
            assert ready.status_code == 200, ready.text
            checks = ready.json()["checks"]
            assert set(checks.values()) == {"ok"}
            assert {"started", "audit log", "revocations", "postgres", "sessions (redis)"} <= set(checks)
            stop(redis)
            down = http.get(f"{bastion.base_url}/readyz")
            assert down.status_code == 503
            assert down.json()["checks"]["sessions (redis)"] != "ok"
            assert down.json()["checks"]["postgres"] == "ok"
            assert http.get(f"{bastion.base_url}/healthz").status_code == 200
            with private_redis(port):
                assert wait_until(lambda: http.get(f"{bastion.base_url}/readyz").status_code == 200, timeout_s=10)


def test_postgresql_gone_refuses_every_call_and_back_serves_them_with_nothing_lost(tmp_path: Path) -> None:
    """The gateway's PostgreSQL (a private cluster) stopped as by a crash, then started again: while it
    is gone every call is refused (503) and none reaches the upstream; once it is back calls pass again
    without a restart; and the upstream carried out exactly as many calls as the log has outcome
    records for (nothing forwarded without its decision record, nothing recorded lost)."""
    with private_postgres(free_port()) as postgres, ledger_server() as (ledger_url, ledger):
        workdir = tmp_path / "gw"
        workdir.mkdir()
        (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
        bastion = BastionProcess(workdir, {
            "policy": {"files": [str(workdir / "policy.cedar")]},
            "stores": {"postgres": {"url": postgres.url}},
            "routes": [{"name": "ledger", "http": {"url": ledger_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
        })  # fmt: skip
        with bastion:
            token = bastion.mint("rita", "ledger", "dev")
            statuses = [deploy(bastion, token, f"up-{n}").status_code for n in range(3)]
            postgres.stop()
            statuses += [deploy(bastion, token, f"down-{n}").status_code for n in range(3)]
            time.sleep(6)  # past the revocation list's max_stale_s too
            statuses += [deploy(bastion, token, "down-late").status_code]
            postgres.start()
            assert wait_until(lambda: deploy(bastion, token, "back").status_code == 200, timeout_s=20)
            assert statuses == [200] * 3 + [503] * 4, statuses
            carried = [entry["service"] for entry in ledger()]
            assert not [service for service in carried if service.startswith("down")]

            def outcomes() -> int:
                return sum(1 for r in _records(bastion) if r["kind"] == "outcome" and r.get("method") == "tools/call")

            assert wait_until(lambda: outcomes() == len(carried), timeout_s=5)  # the last one may still be queued
            assert bastion.cli("audit", "verify", "--config", str(bastion.config_path)).stdout.startswith("OK")


def test_several_workers_share_the_port_the_sessions_and_the_log(tmp_path: Path, schema: str, prefix: str) -> None:
    """``bastion serve --workers 2``: two processes answer on one port (``/healthz`` names its pid), an
    MCP session works on every new connection whichever worker takes it, both write one audit chain,
    and SIGTERM to the supervisor stops every worker."""
    with ledger_server() as (ledger_url, ledger):
        bastion = replica(tmp_path / "w", ledger_url, schema, prefix)
        proc = subprocess.Popen([BASTION, "serve", "--config", str(bastion.config_path), "--workers", "2",
                                 "--log-level", "warning"], cwd=bastion.workdir)  # fmt: skip
        try:
            assert wait_until(lambda: _health_pid(bastion) is not None, timeout_s=30)
            pids = {_health_pid(bastion) for _ in range(40)}  # a new connection each time
            assert len(pids) == 2, pids
            token = bastion.mint("sam", "ledger", "dev")
            with httpx2.Client(timeout=10) as http:
                session_id = open_session(http, bastion.url("ledger"), token)
            for n in range(8):  # each on a new connection: either worker
                call = rpc("tools/call", {"name": "deploy", "arguments": {"service": f"w-{n}", "env": "prod"}},
                           rpc_id=n + 2)  # fmt: skip
                with httpx2.Client(timeout=10) as http:
                    answer = legacy_post(http, bastion.url("ledger"), token, session_id, call)
                assert answer.status_code == 200, answer.text
            assert len(ledger()) == 8
            assert wait_until(lambda: sum(1 for r in _records(bastion) if r["kind"] == "outcome") >= 8, timeout_s=5)
            assert bastion.cli("audit", "verify", "--config", str(bastion.config_path)).stdout.startswith("OK")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        assert proc.returncode == 0
        assert all(not _alive(pid) for pid in pids)


def _health_pid(bastion: BastionProcess) -> int | None:
    try:
        with httpx2.Client(timeout=2) as http:
            return int(http.get(f"{bastion.base_url}/healthz").json()["pid"])
    except httpx2.HTTPError:
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_several_workers_on_embedded_stores_are_refused(tmp_path: Path) -> None:
    done = _run(tmp_path, {}, "serve", "--workers", "2")
    assert done.returncode == 2
    assert "--workers 2 needs every state the workers must share to be shared" in done.stderr
    assert "stores.postgres is not set" in done.stderr
    assert "stores.redis is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_call_cut_by_a_killed_replica_gets_its_outcome_from_the_other(
    tmp_path: Path, schema: str, prefix: str
) -> None:
    """Replica ``a`` is SIGKILLed while a call it forwarded is still running upstream (its answer
    streaming, the first event relayed). Replica ``b`` sees ``a``'s heartbeat stop and, once it has
    been silent ``stores.postgres.replica_lost_s`` (2 s here), writes the outcome ``a`` never wrote:
    ``replica_lost``, flagged ``outcome_unknown``. Every allowed call then has exactly one outcome
    record, the calls answered normally are the ones the upstream carried out, and the chain verifies."""
    policy = tmp_path / "resumable.cedar"
    policy.write_text(
        '@id("dev-resumable")\n'
        'permit (principal in Group::"dev", action == Action::"tools/call", resource in Server::"resumable");\n',
        encoding="utf-8",
    )
    with resumable_server() as (url, calls):
        route = {"name": "resumable", "http": {"url": url, "allow_http": True, "allow": ["127.0.0.1"]}}
        stores = {"postgres": {"url": POSTGRES_URL, "schema": schema, "replica_lost_s": 2},
                  "redis": {"url": REDIS_URL, "prefix": prefix}}  # fmt: skip
        with two_replicas(tmp_path, url, schema, prefix, routes=[route], stores=stores,
                          policy={"files": [str(policy)]}) as (a, b):  # fmt: skip
            token = a.mint("rita", "resumable", "dev")
            endpoint = a.url("resumable")
            with httpx2.Client(timeout=30) as http:
                session = open_session(http, endpoint, token)
                for n in range(2):
                    echo = rpc("tools/call", {"name": "echo", "arguments": {"text": f"echo-{n}"}}, rpc_id=n + 10)
                    assert legacy_post(http, endpoint, token, session, echo).status_code == 200
                headers = raw_headers(token, mcp_session_id=session, mcp_protocol_version=LEGACY_VERSION)
                cut = rpc("tools/call", {"name": "slow", "arguments": {"text": "cut", "delay_s": 2}}, rpc_id=99)
                with contextlib.suppress(httpx2.HTTPError), http.stream("POST", endpoint, json=cut,
                                                                        headers=headers) as response:  # fmt: skip
                    assert response.headers["content-type"].startswith("text/event-stream")
                    for line in response.iter_lines():
                        if line.startswith("data:") and "working" in line:
                            break  # the upstream is running it: a's outcome record is not written yet
                    assert a.proc is not None
                    os.kill(a.proc.pid, signal.SIGKILL)
                    a.proc.wait(10)

            def tool_records() -> list[dict[str, Any]]:
                return [r for r in _records(b) if r.get("method") == "tools/call"]

            def closed() -> bool:
                records = tool_records()
                return len([r for r in records if r["kind"] == "outcome"]) >= 3

            assert wait_until(closed, timeout_s=30), b.log()
            records = tool_records()
            allowed = {r["decision_id"]: r for r in records if r["kind"] == "decision"
                       and r["decision"]["effect"] == "allow"}  # fmt: skip
            outcomes = [r for r in records if r["kind"] == "outcome"]
            assert sorted(r["decision_id"] for r in outcomes) == sorted(allowed)  # one each, no more
            lost = [r for r in outcomes if r["result"]["error_code"] == "replica_lost"]
            assert [allowed[r["decision_id"]]["target"] for r in lost] == ["slow"]
            assert lost[0]["result"]["flags"] == ["outcome_unknown"]
            answered = sorted(c["text"] for c in calls() if c["tool"] == "echo")
            assert answered == ["echo-0", "echo-1"] == sorted(
                allowed[r["decision_id"]]["arguments"]["text"] for r in outcomes if r not in lost
            )
            assert b.cli("audit", "verify", "--config", str(b.config_path)).stdout.startswith("OK")

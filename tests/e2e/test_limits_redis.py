"""Limits counted in Redis (issue 14): two ``bastion serve`` processes sharing one Redis enforce one
limit together; with Redis gone, calls are refused (503, recorded) and never reach the upstream;
with Redis back, calls pass again without anything done by hand.

Real processes on loopback: a private ``redis-server`` started by the test on a free port (so it
can be stopped without touching the machine's own Redis), the ledger MCP server counting the
``deploy`` calls it carries out, two gateways, raw 2026-07-28 requests.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from tests.support.bastion_process import BastionProcess, free_port, stop
from tests.support.databases import private_redis
from tests.support.e2e_helpers import modern_post, wait_until
from tests.support.ledger_server import ledger_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("dev-deploy")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");
"""


def gateway(workdir: Path, ledger_url: str, redis_port: int) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    return BastionProcess(workdir, {
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "counters": {"redis_url": f"redis://127.0.0.1:{redis_port}/0", "prefix": f"e2e-{redis_port}:"},
        "limits": [{"name": "deploys", "match": {"tool": "deploy"}, "rate": "4/minute", "per": "tool"}],
        "routes": [{"name": "ledger", "http": {"url": ledger_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
    })  # fmt: skip


def deploy(bastion: BastionProcess, token: str, service: str) -> httpx2.Response:
    with httpx2.Client(timeout=10) as http:
        params = {"name": "deploy", "arguments": {"service": service, "env": "prod"}}
        return modern_post(http, bastion.url("ledger"), token, "tools/call", params)


def test_two_gateways_share_one_limit_and_fail_closed_without_redis(tmp_path: Path) -> None:
    port = free_port()
    with ledger_server() as (ledger_url, ledger), private_redis(port) as redis:
        a, b = gateway(tmp_path / "a", ledger_url, port), gateway(tmp_path / "b", ledger_url, port)
        with a, b:
            tokens = {a: a.mint("rita", "ledger", "dev"), b: b.mint("sam", "ledger", "dev")}
            statuses = [deploy(g, tokens[g], f"{g.port}-{i}").status_code for i in range(3) for g in (a, b)]
            assert sorted(statuses) == [200] * 4 + [429] * 2, statuses  # one limit of 4 for both
            assert len(ledger()) == 4

            stop(redis)  # Redis goes away mid-run
            refused = deploy(a, tokens[a], "while-down")
            assert refused.status_code == 503
            assert refused.json()["error"]["message"].startswith("Refused: the limit deploys cannot be counted")
            assert len(ledger()) == 4  # never forwarded uncounted
            recorded = ("deny", "limits_unavailable", "deploy")
            assert wait_until(lambda: recorded in a.audit_rows("tools/call"), timeout_s=5)

            with private_redis(port):  # back, empty: counting starts again, no restart of Bastion
                back = wait_until(lambda: deploy(a, tokens[a], "after").status_code == 200 or None, timeout_s=15)
                assert back
                assert len(ledger()) == 5

"""Shadow policies (issue 14): a second policy set is evaluated beside the enforced one on every
call, never enforced; where it would have decided otherwise the decision record says so, and
``bastion policy diff`` sums it up.

Real processes on loopback: the ledger MCP server (it counts the ``deploy`` calls it carries out),
``bastion serve``, the official SDK client, the ``bastion`` CLI.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import audit_records, connect, wait_until
from tests.support.ledger_server import ledger_server

pytestmark = pytest.mark.e2e

ENFORCED = """
@id("dev-deploy")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");
"""
SHADOW = (
    ENFORCED
    + """
@id("no-prod-deploys")
forbid (principal, action == Action::"tools/call", resource == Tool::"ledger/deploy")
when { context.arguments has env && context.arguments.env == "prod" };
"""
)


def test_the_shadow_set_is_recorded_and_summed_up_but_never_enforced(tmp_path: Path) -> None:
    (tmp_path / "enforced.cedar").write_text(ENFORCED, encoding="utf-8")
    (tmp_path / "shadow.cedar").write_text(SHADOW, encoding="utf-8")
    with ledger_server() as (url, ledger):
        config = {
            "policy": {"files": [str(tmp_path / "enforced.cedar")], "shadow_files": [str(tmp_path / "shadow.cedar")]},
            "routes": [{"name": "ledger", "http": {"url": url, "allow_http": True, "allow": ["127.0.0.1"]}}],
        }
        with BastionProcess(tmp_path, config) as bastion:
            token = bastion.mint("rita", "ledger", "dev")

            async def calls() -> list[str]:
                async with connect(bastion.url("ledger"), token, "legacy") as client:
                    return [
                        (await client.call_tool("deploy", {"service": "api", "env": env})).content[0].text
                        for env in ("staging", "prod", "prod")
                    ]

            assert asyncio.run(calls()) == ["deployed api to staging", "deployed api to prod", "deployed api to prod"]
            assert len(ledger()) == 3  # enforcement unchanged: the shadow forbid denied nothing

            decisions = wait_until(lambda: [r for r in audit_records(bastion.database, "tools/call")
                                            if r["kind"] == "decision"] or None)  # fmt: skip
            shadows = [(r["arguments"]["env"], r["decision"].get("shadow")) for r in decisions]
            assert shadows[0] == ("staging", None)
            for env, shadow in shadows[1:]:
                assert env == "prod"
                assert shadow == {"effect": "deny", "policy_ids": ["no-prod-deploys"], "obligations": {}, "errors": []}

            summary = json.loads(bastion.cli("policy", "diff", "--since", "1h", "--json", "--config",
                                             str(bastion.config_path)).stdout)  # fmt: skip
            assert (summary["decisions"], summary["changed"], summary["kinds"]) == (3, 2, {"allow -> deny": 2})
            assert summary["shadow_policies"] == {"no-prod-deploys": 2}
            assert summary["enforced_policies"] == {"dev-deploy": 2}
            assert [e["shadow"] for e in summary["examples"]["allow -> deny"]] == [["no-prod-deploys"]] * 2
            text = bastion.cli("policy", "diff", "--config", str(bastion.config_path)).stdout
            assert "2 of 3 call decisions in the last 1h would change" in text
            assert "allow -> deny: 2" in text

"""``/metrics`` on a real ``bastion serve`` (issue 17): allowed and denied calls through a real MCP
upstream (the ledger server) move exactly the counts they should, which the audit log and the
upstream's ledger confirm; every metric the shipped Grafana dashboard and Prometheus alert rules
use is exported; a client outside ``metrics.allow`` is refused; ``bastion serve --workers 2`` (on
the PostgreSQL and Redis on loopback) answers every scrape, whichever worker takes it, with the
sum over both workers (once each worker's last second of counts is in its file).

Real processes on loopback, raw HTTP requests; the exposition is read with prometheus-client's own
text parser and the PromQL with ``promql-parser``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from tests.support.bastion_process import BASTION, REPO, BastionProcess, stop, wait_http
from tests.support.databases import POSTGRES_URL, REDIS_URL, delete_redis_keys, drop_postgres_schema, postgres_schema
from tests.support.e2e_helpers import modern_post, wait_until
from tests.support.ledger_server import ledger_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("dev-deploy")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");

@id("no-restart")
forbid (principal, action == Action::"tools/call", resource == Tool::"ledger/restart");
"""
DASHBOARD = REPO / "deploy" / "grafana" / "bastion-dashboard.json"
ALERTS = REPO / "deploy" / "prometheus" / "bastion-alerts.yml"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _gateway(workdir: Path, ledger_url: str, **extra: Any) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    return BastionProcess(workdir, {
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "routes": [{"name": "ledger", "http": {"url": ledger_url, "allow_http": True, "allow": ["127.0.0.1"]},
                    "tools": {"deploy": {"risk": "destructive"}}}],
        **extra,
    })  # fmt: skip


def _scrape_text(bastion: BastionProcess, **headers: str) -> httpx2.Response:
    with httpx2.Client(timeout=10) as http:  # a new connection each time: under --workers, any worker
        return http.get(f"{bastion.base_url}/metrics", headers=headers)


def _samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _scrape(bastion: BastionProcess) -> Samples:
    response = _scrape_text(bastion)
    assert response.status_code == 200, response.text
    return _samples(response.text)


def _call(bastion: BastionProcess, token: str | None, tool: str) -> httpx2.Response:
    with httpx2.Client(timeout=15) as http:
        params = {
            "name": tool,
            "arguments": {"service": "api", "env": "prod"} if tool == "deploy" else {"service": "api"},
        }
        return modern_post(http, bastion.url("ledger"), token, "tools/call", params)


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return _value(after, name, **labels) - _value(before, name, **labels)


def test_allowed_and_denied_calls_move_exactly_their_counts(tmp_path: Path) -> None:
    with ledger_server() as (ledger_url, ledger), _gateway(tmp_path, ledger_url) as bastion:
        rita, bob = bastion.mint("rita", "ledger", "dev"), bastion.mint("bob", "ledger")
        before = _scrape(bastion)
        answers = [_call(bastion, rita, "deploy"), _call(bastion, rita, "deploy"), _call(bastion, rita, "restart"),
                   _call(bastion, bob, "deploy"), _call(bastion, None, "deploy")]  # fmt: skip
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 401]
        after = _scrape(bastion)
        rows = wait_until(lambda: [row for row in bastion.audit_rows("tools/call") if row[0] == "deny"][2:] and
                          bastion.audit_rows("tools/call"))  # fmt: skip
        deployed = ledger()
    assert len(deployed) == 2  # the two allowed deploys, nothing else
    calls = {"route": "ledger", "method": "tools/call"}
    assert _delta(before, after, "bastion_requests_total", **calls, outcome="ok") == 2
    assert _delta(before, after, "bastion_requests_total", **calls, outcome="denied") == 3
    assert _delta(before, after, "bastion_requests_total", **calls, outcome="error") == 0
    assert _delta(before, after, "bastion_denials_total", route="ledger", reason="policy_denied") == 2
    assert _delta(before, after, "bastion_denials_total", route="ledger", reason="unauthenticated") == 1
    assert _delta(before, after, "bastion_decisions_total", route="ledger", effect="allow", policy="dev-deploy") == 2
    assert _delta(before, after, "bastion_decisions_total", route="ledger", effect="deny", policy="no-restart") == 1
    assert _delta(before, after, "bastion_decisions_total", route="ledger", effect="deny", policy="") == 1  # bob
    assert _delta(before, after, "bastion_high_risk_calls_total", route="ledger", outcome="forwarded") == 2
    assert _delta(before, after, "bastion_high_risk_calls_total", route="ledger", outcome="denied") == 2
    assert _delta(before, after, "bastion_upstream_duration_seconds_count", route="ledger") == 2
    assert _delta(before, after, "bastion_stage_duration_seconds_count", stage="forward") == 2
    assert _delta(before, after, "bastion_stage_duration_seconds_count", stage="audit") == 2  # durable records
    assert _delta(before, after, "bastion_stage_duration_seconds_count", stage="outcome") == 5
    assert _delta(before, after, "bastion_upstream_errors_total", route="ledger", reason="upstream_unavailable") == 0
    assert _value(after, "bastion_audit_write_failures_total") == 0
    # The audit log's transactions (each batch of records: decisions, outcomes), timed by its writer.
    assert _delta(before, after, "bastion_audit_write_duration_seconds_count") >= 1
    assert _value(after, "bastion_audit_queue_depth") == 0
    # Read from the stores at the scrape: no approval asked for, the sessions the calls left open.
    assert ("bastion_approvals_pending", frozenset()) in after
    assert _value(after, "bastion_approvals_pending") == 0
    assert _value(after, "bastion_sessions_open") == _value(before, "bastion_sessions_open") + _delta(
        before, after, "bastion_sessions_created_total", route="ledger")  # fmt: skip
    # The audit log says the same: two allows forwarded, three denials, by the same reasons.
    denials = sorted(reason or "" for effect, reason, _ in rows if effect == "deny")
    assert denials == ["policy_denied", "policy_denied", "unauthenticated"]
    # The program gauges, from the configuration and the policy set.
    assert _value(after, "bastion_routes", credentials="none") == 1
    assert _value(after, "bastion_routes", credentials="static_secret") == 0
    assert _value(after, "bastion_policies") == 2
    assert _value(after, "bastion_tools_configured", route="ledger") == 1
    assert _value(after, "bastion_tools_permitted", route="ledger") == 1
    assert _value(after, "bastion_tools_high_risk", route="ledger") == 1
    assert _value(after, "bastion_tools_high_risk_approval", route="ledger") == 0


def _exported_names(text: str) -> set[str]:
    """Every series name a scrape can be queried by: samples, and each family's names (a histogram
    family ``x`` gives ``x_bucket``, ``x_sum``, ``x_count``; a counter ``x`` gives ``x_total``)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "counter":
            names.add(f"{family.name}_total")
        else:
            names.add(family.name)
    return names


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for panel in dashboard["panels"] for p in (panel, *panel.get("panels", []))]
    found = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    found.extend(v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                 for v in dashboard["templating"]["list"] if v.get("type") == "query")  # fmt: skip
    return found


def _alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's variables replaced first; a
    ``label_values(metric, label)`` variable query names its metric)."""
    if expression.startswith("label_values("):
        expression = expression.removeprefix("label_values(").split(",")[0]
    promql = expression.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    names: set[str] = set()

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(promql), visit)
    return names


def test_every_metric_the_dashboard_and_the_alerts_use_is_exported(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] == "bastion-gateway"
    expressions = _dashboard_expressions() + _alert_expressions()
    assert len(expressions) >= 20
    with ledger_server() as (ledger_url, _), _gateway(tmp_path, ledger_url) as bastion:
        _call(bastion, bastion.mint("rita", "ledger", "dev"), "deploy")
        exported = _exported_names(_scrape_text(bastion).text)
    used = {name: _metric_names(expression) for expression in expressions for name in [expression]}
    missing = {expression: names - exported for expression, names in used.items() if names - exported}
    assert not missing, missing
    assert all(names for names in used.values()), [e for e, names in used.items() if not names]
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["alert"].startswith("Bastion")
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert set(rule["annotations"]) == {"summary", "description"}


def test_metrics_are_refused_to_a_client_outside_allow_and_given_for_the_token(tmp_path: Path) -> None:
    env = {"BASTION_E2E_METRICS_TOKEN": uuid.uuid4().hex}
    settings = {"allow": ["192.0.2.0/24"], "token": {"env": "BASTION_E2E_METRICS_TOKEN"}}
    with ledger_server() as (ledger_url, _):
        bastion = _gateway(tmp_path / "guarded", ledger_url, metrics=settings)
        with bastion.start(env=env):
            refused = _scrape_text(bastion)  # from 127.0.0.1, not in 192.0.2.0/24
            wrong = _scrape_text(bastion, authorization="Bearer not-the-token")
            admitted = _scrape_text(bastion, authorization=f"Bearer {env['BASTION_E2E_METRICS_TOKEN']}")
        off = _gateway(tmp_path / "off", ledger_url, metrics={"enabled": False})
        with off:
            absent = _scrape_text(off)
    assert (refused.status_code, refused.json()) == (403, {"error": "forbidden"})
    assert "bastion_" not in refused.text
    assert wrong.status_code == 403
    assert admitted.status_code == 200
    assert "bastion_policies 2.0" in admitted.text
    assert absent.status_code == 404


@pytest.fixture
def shared_stores(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``stores:`` on a PostgreSQL schema and a Redis key prefix of the test's own, removed afterwards."""
    prefix = f"bastion-e2e-metrics:{uuid.uuid4().hex}:"
    yield {"postgres": {"url": POSTGRES_URL, "schema": postgres_schema(tmp_path)}, "redis": {"url": REDIS_URL,
           "prefix": prefix}}  # fmt: skip
    asyncio.run(drop_postgres_schema(tmp_path))
    asyncio.run(delete_redis_keys(prefix))


DEPLOYS = 12


def _per_worker(directory: Path, scratch: Path, name: str, **labels: str) -> list[float]:
    """``name{labels}`` in each worker's counter file alone (each read as a directory of its own)."""
    values = []
    for file in sorted(directory.glob("counter_*.db")):
        single = scratch / file.stem
        single.mkdir(parents=True)
        shutil.copy2(file, single)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(single))
        values.append(registry.get_sample_value(name, labels) or 0.0)
    return values


def _worker_pids(bastion: BastionProcess) -> set[int]:
    pids: set[int] = set()
    for _ in range(40):  # new connections: the kernel spreads them over the workers' sockets
        with httpx2.Client(timeout=5) as http:
            pids.add(http.get(f"{bastion.base_url}/healthz").json()["pid"])
    return pids


def test_every_scrape_of_two_workers_sums_both(tmp_path: Path, shared_stores: dict[str, Any]) -> None:
    with ledger_server() as (ledger_url, ledger):
        bastion = _gateway(tmp_path, ledger_url, stores=shared_stores)
        stale = tmp_path / "data" / "metrics"
        stale.mkdir(parents=True)
        (stale / "counter_999999.db").write_bytes(b"left by an earlier run")
        log = bastion.log_path.open("ab")
        command = [BASTION, "serve", "--config", str(bastion.config_path), "--workers", "2"]
        supervisor = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=dict(os.environ))
        log.close()
        try:
            wait_http(f"{bastion.base_url}/healthz", proc=supervisor, timeout_s=60)
            assert len(wait_until(lambda: len(_worker_pids(bastion)) == 2 and _worker_pids(bastion), timeout_s=30)) == 2
            rita = bastion.mint("rita", "ledger", "dev")
            answers = [_call(bastion, rita, "deploy").status_code for _ in range(DEPLOYS)]
            answers += [_call(bastion, rita, "restart").status_code for _ in range(3)]
            assert answers == [200] * (DEPLOYS + 3)
            ok = {"route": "ledger", "method": "tools/call", "outcome": "ok"}
            denied = {"route": "ledger", "reason": "policy_denied"}

            def complete() -> bool:
                samples = _scrape(bastion)
                return (_value(samples, "bastion_requests_total", **ok),
                        _value(samples, "bastion_denials_total", **denied)) == (DEPLOYS, 3)  # fmt: skip

            # A worker adds its counts to its file within a second (FLUSH_S); then every scrape agrees.
            assert wait_until(complete, timeout_s=10)
            scrapes = [_scrape(bastion) for _ in range(8)]
            files = {path.name for path in stale.iterdir()}
            deployed = ledger()
        finally:
            stop(supervisor, timeout_s=20)
    assert len(deployed) == DEPLOYS
    # Both workers served calls (new connections, spread by the kernel): a scrape that one worker
    # answered alone could not show them all.
    served = _per_worker(stale, tmp_path / "one-worker", "bastion_requests_total", **ok)
    assert len(served) == 2
    assert min(served) > 0
    assert sum(served) == DEPLOYS
    calls = {"route": "ledger", "method": "tools/call"}
    for samples in scrapes:  # whichever worker answered, the same sums
        assert _value(samples, "bastion_requests_total", **calls, outcome="ok") == DEPLOYS, bastion.log()
        assert _value(samples, "bastion_denials_total", route="ledger", reason="policy_denied") == 3
        assert _value(samples, "bastion_stage_duration_seconds_count", stage="forward") == DEPLOYS
        assert _value(samples, "bastion_routes", credentials="none") == 1  # livemax: one value, not two added
    assert "counter_999999.db" not in files  # the directory was emptied at start
    assert len({name for name in files if name.startswith("counter_")}) == 2  # one file per worker

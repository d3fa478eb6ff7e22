"""The approval, audit and session metrics (``GatewayMetrics.watch``, ``ScrapedGauges``): decision
times by outcome from the desk, pending requests and sessions open read from their stores at a
scrape (NaN when a read fails or hangs, and the scrape still answers), the audit log's transactions
and queue depth from the embedded writer."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from starlette.applications import Starlette
from starlette.testclient import TestClient
from tests.support.audit_events import decision
from tests.support.audit_fakes import RecordingAuditLog

from bastion.approvals.desk import ApprovalDesk
from bastion.approvals.model import ApprovalBinding
from bastion.approvals.store_memory import MemoryApprovalStore
from bastion.audit.store_sqlite import SQLiteAuditLog
from bastion.config import BastionConfig
from bastion.config.metrics import MetricsSettings
from bastion.metrics import BastionMetrics, GatewayMetrics, MetricsObserver
from bastion.metrics.endpoint import metrics_route
from bastion.metrics.program import ProgramGauges
from bastion.metrics.sampled import ScrapedGauges
from bastion.policy import PolicyEngine
from bastion.principal import Principal
from bastion.stores.memory_sessions import MemorySessionStore

POLICY = '@id("ops") permit (principal in Group::"ops", action == Action::"approvals/decide", resource is Approval);\n'


def person(sub: str, *groups: str) -> Principal:
    return Principal(kind="User", sub=sub, issuer="https://bastion.test", auth_method="bastion_jwt",
                     expires_at=0, idp="local", groups=groups)  # fmt: skip


def gateway_metrics(engine: PolicyEngine) -> GatewayMetrics:
    metrics = BastionMetrics()
    observer = MetricsObserver(metrics, engine)
    scraped = ScrapedGauges(timeout_s=0.2)
    route = metrics_route(MetricsSettings(), metrics, flush=observer.flush, sample=scraped.sample)
    program = ProgramGauges(metrics, BastionConfig.model_construct(routes=[]), engine)  # no routes: never read here
    return GatewayMetrics(metrics, observer, route, program, scraped)


def value(gm: GatewayMetrics, name: str, **labels: str) -> float | None:
    return gm.metrics.registry.get_sample_value(name, labels)


async def test_decisions_pending_requests_sessions_and_the_audit_log_are_measured(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text(POLICY, encoding="utf-8")
    engine = PolicyEngine.load([tmp_path / "p.cedar"])
    clock = [1_000.0]
    desk = ApprovalDesk(store=MemoryApprovalStore(), log=RecordingAuditLog(), engine=engine, ttl=3600,
                        status_url=str, clock=lambda: clock[0])  # fmt: skip
    sessions = MemorySessionStore()
    audit = SQLiteAuditLog(tmp_path / "audit.db", linger_ms=0)
    gm = gateway_metrics(engine)
    gm.watch(approvals=desk, audit=audit, sessions=sessions)
    rita, alex = person("rita", "dev"), person("alex", "ops")
    ids = []
    for n in range(3):
        binding = ApprovalBinding(rita.key, "ci", "deploy", f"{n:064x}", "v1")
        request = await desk.admit(binding, kind="review", principal=rita, arguments={}, risk="destructive",
                                   classification="", policy_ids=("p",), decision_id=f"call-{n}")  # fmt: skip
        ids.append(request.id)
    clock[0] += 42
    await desk.decide(ids[0], approver=alex, approve=True, reason="ok")
    clock[0] += 600  # 642 s after the request
    await desk.decide(ids[1], approver=alex, approve=False, reason="no")
    await sessions.create("ci", rita.key)
    await sessions.create("ci", alex.key)
    await gm.scraped.sample()
    assert value(gm, "bastion_approval_decision_seconds_count", outcome="approved") == 1
    assert value(gm, "bastion_approval_decision_seconds_sum", outcome="approved") == 42
    assert value(gm, "bastion_approval_decision_seconds_bucket", outcome="approved", le="60.0") == 1
    assert value(gm, "bastion_approval_decision_seconds_bucket", outcome="denied", le="600.0") == 0
    assert value(gm, "bastion_approval_decision_seconds_bucket", outcome="denied", le="900.0") == 1
    assert value(gm, "bastion_approvals_pending") == 1
    assert value(gm, "bastion_sessions_open") == 2
    async with audit:
        await audit.append(decision(1))
        await audit.append(decision(2))
        gm.observer.flush()
        assert value(gm, "bastion_audit_queue_depth") == 0
    commits = value(gm, "bastion_audit_write_duration_seconds_count")
    assert commits is not None
    assert 1 <= commits <= 2
    assert 0 < (value(gm, "bastion_audit_write_duration_seconds_sum") or 0) < 5


async def test_a_read_that_fails_or_hangs_shows_as_nan_and_the_scrape_still_answers(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text(POLICY, encoding="utf-8")
    gm = gateway_metrics(PolicyEngine.load([tmp_path / "p.cedar"]))

    async def broken() -> int:
        raise OSError("the store is down")

    async def hanging() -> int:
        await asyncio.sleep(60)
        return 1

    gm.scraped.watch(gm.metrics.approvals_pending, broken)
    gm.scraped.watch(gm.metrics.sessions_open, hanging)
    with TestClient(Starlette(routes=[gm.route]), client=("127.0.0.1", 50000)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert "bastion_approvals_pending NaN" in response.text
    assert "bastion_sessions_open NaN" in response.text
    assert math.isnan(value(gm, "bastion_sessions_open") or 0.0)

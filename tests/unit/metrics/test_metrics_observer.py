"""``MetricsObserver`` on the real runner: what each kind of request adds to which metric, read back
from the registry (``get_sample_value``). The stages are small functions; the audit stage is the real
one, on an in-memory log (``tests.support.audit_fakes``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.audit_fakes import RecordingAuditLog

from bastion.config import HttpUpstream, RouteSettings
from bastion.errors import AuditUnavailable, BastionError, PolicyDenied, RateLimited, UpstreamUnavailable
from bastion.metrics import BastionMetrics, MetricsObserver
from bastion.metrics import observer as observer_module
from bastion.pipeline.context import Exchange, HttpRequest, JsonReply
from bastion.pipeline.filters import MessageInspector
from bastion.pipeline.runner import Pipeline
from bastion.pipeline.stages.audit import AuditStage
from bastion.policy import Decision, ResourceRef
from bastion.principal import Principal
from bastion.transport.routes import RouteRuntime

ALICE = Principal(kind="User", sub="alice", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0)
POLICIES = ("notes-read", "no-delete")


@dataclass
class Policies:
    """The enforced policy set as the observer reads it (a ``PolicyEngine`` in the gateway)."""

    version: str = "v1"
    policy_ids: tuple[str, ...] = POLICIES


class Step:
    """A stage named ``name`` running ``fn`` on the exchange."""

    def __init__(self, name: str, fn: Callable[[Exchange], Any] | None = None) -> None:
        self.name, self.fn = name, fn

    async def run(self, exchange: Exchange) -> None:
        if self.fn is not None:
            self.fn(exchange)


class FailingLog(RecordingAuditLog):
    async def append(self, body: dict[str, Any]) -> None:
        raise AuditUnavailable("disk full")


def _parse(exchange: Exchange) -> None:
    exchange.message = json.loads(exchange.http.body)
    exchange.kind = "request"
    exchange.principal = ALICE


def _decide(effect: str, *policies: str, risk: str = "read") -> Callable[[Exchange], None]:
    def decide(exchange: Exchange) -> None:
        name = exchange.params.get("name", "")
        exchange.resource = ResourceRef("Tool", "notes", name, {"risk": risk})
        exchange.decision = Decision(effect, policies)  # type: ignore[arg-type]
        if effect == "deny":
            raise PolicyDenied("Denied", data={"policies": list(policies)})

    return decide


def _raise(error: BastionError) -> Callable[[Exchange], None]:
    def fn(_: Exchange) -> None:
        raise error

    return fn


def _answer(exchange: Exchange) -> None:
    exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": exchange.rpc_id, "result": {"content": []}})


class Rig:
    """A pipeline transport → authorize [→ limits] → audit → forward, observed by a fresh metrics registry."""

    def __init__(
        self,
        authorize: Callable[[Exchange], None] | None = None,
        *,
        limits: Callable[[Exchange], None] | None = None,
        forward: Callable[[Exchange], None] = _answer,
        log: RecordingAuditLog | None = None,
    ) -> None:
        self.metrics = BastionMetrics()
        self.policies = Policies()
        self.programs: list[str] = []
        self.observer = MetricsObserver(self.metrics, self.policies,
                                        on_policies=lambda: self.programs.append(self.policies.version))  # fmt: skip
        audit = AuditStage(log or RecordingAuditLog(), policy_version="v1")  # type: ignore[arg-type]
        checks = [Step("transport", _parse), Step("authorize", authorize or _decide("allow", "notes-read"))]
        if limits is not None:
            checks.append(Step("limits", limits))
        inspector = MessageInspector([], on_drop=audit.record_dropped)
        self.pipeline = Pipeline(checks, audit=audit, forward=Step("forward", forward), inspector=inspector,
                                 observer=self.observer)  # fmt: skip

    async def call(self, method: str = "tools/call", name: str = "search") -> Exchange:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"name": name, "arguments": {}}})
        request = HttpRequest("POST", "/mcp/notes", {}, (), "127.0.0.1", body.encode())
        route = RouteRuntime(settings=RouteSettings(name="notes", http=HttpUpstream(url="http://up.test/mcp",
                             allow_http=True)), resource_uri="http://gw.test/mcp/notes", metadata_url="")  # fmt: skip
        exchange = Exchange(route=route, http=request)
        await self.pipeline.handle(exchange)
        await self.pipeline.finish(exchange)  # as the endpoint does once the reply was sent
        return exchange

    def value(self, name: str, **labels: str) -> float:
        self.observer.flush()  # as /metrics does before it reads
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_an_allowed_call_is_one_request_one_decision_and_a_time_per_stage() -> None:
    rig = Rig()
    await rig.call()
    assert rig.value("bastion_requests_total", route="notes", method="tools/call", outcome="ok") == 1
    assert rig.value("bastion_decisions_total", route="notes", effect="allow", policy="notes-read") == 1
    for stage in ("transport", "authorize", "audit", "forward", "inspect", "outcome"):
        assert rig.value("bastion_stage_duration_seconds_count", stage=stage) == 1, stage
    assert rig.value("bastion_upstream_duration_seconds_count", route="notes") == 1
    assert rig.value("bastion_denials_total", route="notes", reason="policy_denied") == 0
    assert rig.value("bastion_high_risk_calls_total", route="notes", outcome="forwarded") == 0


async def test_a_policy_deny_counts_the_denial_its_reason_and_the_deciding_policy() -> None:
    rig = Rig(_decide("deny", "no-delete", risk="destructive"))
    await rig.call(name="delete_note")
    await rig.call(name="delete_note")
    assert rig.value("bastion_requests_total", route="notes", method="tools/call", outcome="denied") == 2
    assert rig.value("bastion_denials_total", route="notes", reason="policy_denied") == 2
    assert rig.value("bastion_decisions_total", route="notes", effect="deny", policy="no-delete") == 2
    assert rig.value("bastion_high_risk_calls_total", route="notes", outcome="denied") == 2
    assert rig.value("bastion_stage_duration_seconds_count", stage="forward") == 0  # never reached


async def test_a_default_deny_has_the_empty_policy_and_the_gate_refusal_counts_as_denied() -> None:
    rig = Rig(lambda exchange: None)  # no stage decides: the runner's gate refuses
    await rig.call()
    assert rig.value("bastion_denials_total", route="notes", reason="policy_denied") == 1
    rig2 = Rig(_decide("deny"))
    await rig2.call()
    assert rig2.value("bastion_decisions_total", route="notes", effect="deny", policy="") == 1


async def test_label_values_outside_their_closed_sets_are_counted_as_other() -> None:
    rig = Rig(_decide("allow", "a-policy-not-in-the-set"))
    await rig.call(method="x/made-up-by-the-client")
    assert rig.value("bastion_decisions_total", route="notes", effect="allow", policy="other") == 1
    assert rig.value("bastion_requests_total", route="notes", method="other", outcome="ok") == 1


async def test_a_rate_limit_is_a_limit_hit_and_a_denial() -> None:
    limited = RateLimited("slow down", limit="calls", rate="1/minute", retry_after_s=30)
    rig = Rig(limits=_raise(limited))
    await rig.call()
    assert rig.value("bastion_limits_hit_total", route="notes", reason="rate_limited") == 1
    assert rig.value("bastion_denials_total", route="notes", reason="rate_limited") == 1


async def test_an_audit_write_that_fails_is_counted_and_nothing_is_forwarded() -> None:
    rig = Rig(log=FailingLog())
    await rig.call()
    assert rig.value("bastion_audit_write_failures_total") == 1
    assert rig.value("bastion_denials_total", route="notes", reason="audit_unavailable") == 1
    assert rig.value("bastion_upstream_duration_seconds_count", route="notes") == 0


async def test_an_upstream_failure_is_an_upstream_error_and_an_error_outcome() -> None:
    rig = Rig(forward=_raise(UpstreamUnavailable("connection refused")))
    await rig.call()
    assert rig.value("bastion_upstream_errors_total", route="notes", reason="upstream_unavailable") == 1
    assert rig.value("bastion_requests_total", route="notes", method="tools/call", outcome="error") == 1
    assert rig.value("bastion_denials_total", route="notes", reason="upstream_unavailable") == 0


async def test_a_tool_error_answer_is_a_result_error_not_an_upstream_error() -> None:
    def tool_error(exchange: Exchange) -> None:
        exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": True}})

    rig = Rig(forward=tool_error)
    await rig.call()
    assert rig.value("bastion_requests_total", route="notes", method="tools/call", outcome="result_error") == 1
    assert rig.value("bastion_upstream_errors_total", route="notes", reason="upstream_error") == 0


@pytest.mark.parametrize("status", ["consumed", "pending"])
async def test_a_call_held_for_approval_is_waiting_until_it_is_over(status: str) -> None:
    metrics = BastionMetrics()
    observer = MetricsObserver(metrics, Policies())
    exchange = await Rig().call()  # any exchange of the notes route
    exchange.notes["hold"] = object()
    observer.stage_ended(exchange, "approve", 0.001, None)
    assert metrics.registry.get_sample_value("bastion_approvals_waiting") == 1
    exchange.notes["approval"] = {"id": "a1", "status": status}
    observer.stage_ended(exchange, "outcome", 0.0, None)
    assert metrics.registry.get_sample_value("bastion_approvals_waiting") == 0
    observer.flush()
    assert metrics.registry.get_sample_value("bastion_approvals_total", {"route": "notes", "status": status}) == 1


async def test_counts_reach_the_registry_by_themselves_a_moment_after_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(observer_module, "FLUSH_S", 0.05)
    rig = Rig()
    await rig.call()
    registry = rig.metrics.registry
    labels = {"route": "notes", "method": "tools/call", "outcome": "ok"}
    assert registry.get_sample_value("bastion_requests_total", labels) is None  # tallied, not yet added
    await asyncio.sleep(0.2)
    assert registry.get_sample_value("bastion_requests_total", labels) == 1  # no scrape needed


async def test_after_a_policy_reload_the_new_ids_are_counted_and_the_program_recomputed() -> None:
    rig = Rig(_decide("allow", "notes-write"))
    await rig.call()
    assert rig.value("bastion_decisions_total", route="notes", effect="allow", policy="other") == 1
    assert rig.programs == []
    rig.policies.version, rig.policies.policy_ids = "v2", ("notes-write",)  # adopted in place
    await rig.call()
    assert rig.value("bastion_decisions_total", route="notes", effect="allow", policy="notes-write") == 1
    assert rig.programs == ["v2"]  # once, at the flush after the reload
    rig.value("bastion_requests_total")
    assert rig.programs == ["v2"]

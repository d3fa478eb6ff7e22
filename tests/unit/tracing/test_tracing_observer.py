"""``TracingObserver`` on a real runner (``bastion.pipeline.runner.Pipeline``): one SERVER span per request whose
parent is the client's ``traceparent``, a child per stage with the upstream call as a CLIENT span whose context is
what goes upstream, the trace id in the decision record, errors as span status, nothing recorded when unsampled.
Spans are read back from the SDK's in-memory exporter."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import SpanKind, StatusCode
from tests.support.audit_fakes import RecordingAuditLog

from bastion.config import RouteSettings, StdioUpstream
from bastion.errors import PolicyDenied
from bastion.pipeline.context import Exchange, HttpRequest, JsonReply
from bastion.pipeline.plan import assemble
from bastion.pipeline.runner import Pipeline
from bastion.pipeline.stages.audit import AuditStage
from bastion.policy import Decision, ResourceRef
from bastion.principal import Principal
from bastion.tracing import TracingObserver
from bastion.transport.routes import RouteRuntime

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
CALL = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "deploy", "arguments": {"env": "prod"}}}
ANN = Principal(kind="User", sub="ann", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0)


class Parse:
    name = "transport"

    async def run(self, exchange: Exchange) -> None:
        exchange.message, exchange.kind, exchange.principal = json.loads(exchange.http.body), "request", ANN
        exchange.target = "deploy"


class Decide:
    name = "authorize"

    def __init__(self, allow: bool) -> None:
        self.allow = allow

    async def run(self, exchange: Exchange) -> None:
        exchange.resource = ResourceRef("Tool", "r", "deploy", {"risk": "destructive"})
        exchange.decision = Decision("allow" if self.allow else "deny", ("ops-deploy",))
        if not self.allow:
            raise PolicyDenied("Denied by policy ops-deploy", data={"policies": ["ops-deploy"]})


class Upstream:
    """The forward stage's stand-in: keeps the trace headers it would send, answers at once."""

    name = "forward"

    def __init__(self) -> None:
        self.sent: list[dict[str, str] | None] = []

    async def run(self, exchange: Exchange) -> None:
        self.sent.append(exchange.notes.get("trace_headers"))
        exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": 9, "result": {"content": [], "isError": False}})


class Rig:
    def __init__(self, sampler: Sampler = ALWAYS_ON, *, allow: bool = True) -> None:
        self.spans = InMemorySpanExporter()
        provider = TracerProvider(sampler=ParentBased(sampler))
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.upstream, self.log = Upstream(), RecordingAuditLog()
        route = RouteRuntime(settings=RouteSettings(name="r", stdio=StdioUpstream(command="true")),
                             resource_uri="http://gw.test/mcp/r", metadata_url="")  # fmt: skip
        self.route = route
        pipelines = assemble(
            checks={"transport": Parse(), "authorize": Decide(allow)},
            stream_checks={},
            forward={"POST": self.upstream, "GET": self.upstream, "DELETE": self.upstream},
            filters={},
            audit=AuditStage(self.log, policy_version="v1"),  # type: ignore[arg-type]
            observer=TracingObserver(provider.get_tracer("test")),
        )
        self.pipeline: Pipeline = pipelines.post

    async def call(self, headers: dict[str, str] | None = None) -> Exchange:
        request = HttpRequest("POST", "/mcp/r", headers or {}, (), "192.0.2.7", json.dumps(CALL).encode())
        exchange = Exchange(route=self.route, http=request)
        await self.pipeline.handle(exchange)
        await self.pipeline.finish(exchange)
        return exchange

    def finished(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.spans.get_finished_spans()}


@pytest.fixture
def rig() -> Rig:
    return Rig()


def _hex(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


async def test_a_call_is_one_server_span_under_the_clients_trace_with_a_child_per_stage(rig: Rig) -> None:
    exchange = await rig.call({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    spans = rig.finished()
    request = spans["tools/call deploy"]
    assert request.kind == SpanKind.SERVER
    assert _hex(request.context.trace_id, 32) == TRACE_ID
    assert request.parent is not None
    assert _hex(request.parent.span_id, 16) == PARENT_ID
    assert request.parent.is_remote
    attributes: dict[str, Any] = dict(request.attributes or {})
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == "deploy"
    assert attributes["jsonrpc.request.id"] == "9"
    assert attributes["http.request.method"] == "POST"
    assert attributes["client.address"] == "192.0.2.7"
    assert attributes["bastion.decision"] == "allow"
    assert attributes["http.response.status_code"] == 200
    assert "env" not in json.dumps(attributes)  # never an argument
    stages = {"transport", "authorize", "audit", "forward", "inspect", "outcome"}
    assert stages <= set(spans)
    for name in stages:
        assert spans[name].parent is not None
        assert spans[name].parent.span_id == request.context.span_id
    assert spans["forward"].kind == SpanKind.CLIENT
    assert spans["authorize"].kind == SpanKind.INTERNAL
    [sent] = rig.upstream.sent
    assert sent == {"traceparent": f"00-{TRACE_ID}-{_hex(spans['forward'].context.span_id, 16)}-01"}
    [decision] = rig.log.of_kind("decision")
    assert decision["trace_id"] == TRACE_ID == exchange.notes["trace_id"]


async def test_without_a_traceparent_a_new_trace_starts_and_a_malformed_one_is_ignored(rig: Rig) -> None:
    await rig.call()
    await rig.call({"traceparent": "00-not-a-trace-01"})
    first, second = (span for span in rig.spans.get_finished_spans() if span.kind == SpanKind.SERVER)
    assert first.parent is None
    assert second.parent is None
    assert first.context.trace_id != second.context.trace_id
    assert [record["trace_id"] for record in rig.log.of_kind("decision")] == [
        _hex(first.context.trace_id, 32), _hex(second.context.trace_id, 32)
    ]  # fmt: skip


async def test_a_denied_call_ends_its_spans_with_the_error() -> None:
    rig = Rig(allow=False)
    await rig.call()
    spans = rig.finished()
    assert "forward" not in spans
    assert spans["authorize"].status.status_code == StatusCode.ERROR
    assert dict(spans["authorize"].attributes or {})["error.type"] == "policy_denied"
    request = spans["tools/call deploy"]
    assert request.status.status_code == StatusCode.ERROR
    assert dict(request.attributes or {})["bastion.decision"] == "deny"
    assert rig.upstream.sent == []


async def test_an_unsampled_trace_records_nothing_and_still_tells_the_upstream() -> None:
    rig = Rig(ALWAYS_OFF)
    exchange = await rig.call({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"})
    assert rig.spans.get_finished_spans() == ()
    [sent] = rig.upstream.sent
    assert sent is not None
    version, trace_id, span_id, flags = sent["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "00")  # the caller's trace, unsampled, passed on
    assert span_id != PARENT_ID  # under Bastion's own (unrecorded) span
    assert exchange.notes["trace_id"] == TRACE_ID


async def test_a_clients_sampled_flag_is_followed_even_when_bastion_would_not_sample() -> None:
    rig = Rig(ALWAYS_OFF)
    await rig.call({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert "tools/call deploy" in rig.finished()

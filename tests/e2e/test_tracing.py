"""OpenTelemetry traces through a real ``bastion serve`` (issue 17, ``bastion.tracing``): a call made under the
client's W3C ``traceparent`` is one SERVER span of that trace with a child per stage, the upstream call a CLIENT span
whose context is the ``traceparent`` the upstream receives, and the trace id is in the call's decision record; with
tracing off (the default) the upstream gets no ``traceparent`` at all, not even the client's.

Real processes on loopback: ``tests/support/traced_server`` (an MCP server written with the official SDK that keeps
the ``traceparent`` of each request), ``bastion serve`` exporting over OTLP/HTTP to ``tests/support/trace_receiver``
(a receiver decoding ``ExportTraceServiceRequest`` with opentelemetry-proto, standing in for a collector), raw
2026-07-28 requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import audit_records, modern_post, reply_message, wait_until
from tests.support.trace_receiver import ReceivedSpan, TraceReceiver
from tests.support.traced_server import traced_server

pytestmark = pytest.mark.e2e

POLICY = '@id("ann-calls")\npermit (principal == User::"ann", action == Action::"tools/call", resource);\n'
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Any]]:
    with traced_server() as server:
        yield server


def _bastion(workdir: Path, url: str, tracing: dict[str, Any] | None) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    config: dict[str, Any] = {
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "routes": [{"name": "traced", "http": {"url": url, "allow_http": True, "allow": ["127.0.0.1"]}}],
    }
    if tracing is not None:
        config["tracing"] = tracing
    return BastionProcess(workdir, config)


def _call(bastion: BastionProcess, traceparent: str) -> dict[str, Any]:
    token = bastion.mint("ann", "traced")
    with httpx2.Client(timeout=10) as http:
        params = {"name": "deploy", "arguments": {"service": "api"}}
        reply = modern_post(http, bastion.url("traced"), token, "tools/call", params, traceparent=traceparent)
    assert reply.status_code == 200, reply.text
    return reply_message(reply)


def test_a_call_is_one_trace_from_the_client_through_bastion_to_the_upstream(
    tmp_path: Path, upstream: tuple[str, Any]
) -> None:
    url, seen = upstream
    with TraceReceiver() as receiver:
        bastion = _bastion(tmp_path, url, {"enabled": True, "endpoint": receiver.endpoint, "service_name": "gw-test"})
        with bastion.start(env={"OTEL_BSP_SCHEDULE_DELAY": "200"}):
            answer = _call(bastion, f"00-{TRACE_ID}-{CLIENT_SPAN}-01")
            assert answer["result"]["content"][0]["text"] == "deployed api"

            def spans() -> dict[str, ReceivedSpan] | None:
                found = {span.name: span for span in receiver.spans if span.trace_id == TRACE_ID}
                return found if "tools/call deploy" in found and "outcome" in found else None

            found = wait_until(spans, timeout_s=15)
            request = found["tools/call deploy"]
            assert (request.kind, request.parent_span_id) == ("SPAN_KIND_SERVER", CLIENT_SPAN)
            assert request.attributes["mcp.method.name"] == "tools/call"
            assert request.attributes["gen_ai.tool.name"] == "deploy"
            assert request.attributes["bastion.decision"] == "allow"
            assert request.attributes["http.response.status_code"] == 200
            assert request.resource["service.name"] == "gw-test"
            for stage in ("transport", "authenticate", "authorize", "audit", "forward", "inspect", "outcome"):
                assert found[stage].parent_span_id == request.span_id, stage
            forward = found["forward"]
            assert forward.kind == "SPAN_KIND_CLIENT"
            posted = [entry["traceparent"] for entry in seen() if entry["method"] == "POST"]
            assert posted[-1] == f"00-{TRACE_ID}-{forward.span_id}-01"  # the upstream call's own context
            [decision] = [r for r in audit_records(bastion.database, "tools/call") if r["kind"] == "decision"]
            assert decision["trace_id"] == TRACE_ID


def test_with_tracing_off_no_traceparent_reaches_the_upstream(tmp_path: Path, upstream: tuple[str, Any]) -> None:
    url, seen = upstream
    before = len(seen())
    with _bastion(tmp_path, url, None) as bastion:
        _call(bastion, f"00-{TRACE_ID}-{CLIENT_SPAN}-01")
        new = seen()[before:]
        assert new
        assert all(entry["traceparent"] is None for entry in new)  # the client's is never copied
        [decision] = [r for r in audit_records(bastion.database, "tools/call") if r["kind"] == "decision"]
        assert decision["trace_id"] is None

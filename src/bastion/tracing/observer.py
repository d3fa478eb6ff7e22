"""The tracing observer: one OpenTelemetry span per request, a child per stage, fed at the runner's step.

``TracingObserver`` is a ``bastion.pipeline.observer.StepObserver``. At a request's first step it
starts a ``SERVER`` span whose parent is the client's W3C ``traceparent`` (Trace Context Level 1;
a malformed one is ignored: a new trace starts) and notes the trace id for the audit record
(``notes["trace_id"]``, 32 lowercase hex digits). Each stage is a child span (``INTERNAL``); the
``forward`` stage is the upstream call, a ``CLIENT`` span whose context goes upstream as
``traceparent``/``tracestate`` (``notes["trace_headers"]``, which the HTTP forward stage adds to
the upstream request). The request span ends with the runner's ``outcome`` step, which every
request reaches once its reply was sent (for SSE, once the stream ended).

Attribute names are OpenTelemetry's semantic conventions: HTTP (``http.request.method``,
``url.path``, ``client.address``, ``http.response.status_code``), MCP and GenAI
(``mcp.method.name``, ``mcp.session.id``, ``mcp.protocol.version``, ``jsonrpc.request.id``,
``gen_ai.operation.name``, ``gen_ai.tool.name``), ``error.type`` (the error's stable code), plus
``bastion.*`` for what they have no name for (route, decision, policy ids, decision id). The
span name is ``"<mcp.method.name> <target>"`` (``"tools/call deploy"``) as the MCP conventions
name it. No argument, result or token is put in a span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bastion.errors import BastionError
from bastion.pipeline.context import Exchange

__all__ = ["TracingObserver"]

_PROPAGATOR = TraceContextTextMapPropagator()
_NOTE = "trace"


@dataclass(slots=True)
class _Trace:
    """The spans of one request: the request's own, and the stage running now."""

    span: Span
    context: Context
    recording: bool
    stages: dict[str, Span] = field(default_factory=dict)


def _headers(context: Context) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) for a request made in ``context`` (W3C Trace Context)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


class TracingObserver:
    """Spans for every request, from ``tracer`` (``bastion.tracing.Tracing`` builds both); with
    ``stages`` false, only the request's span and the upstream call's (``tracing.stage_spans``)."""

    def __init__(self, tracer: Tracer, *, stages: bool = True) -> None:
        self._tracer = tracer
        self._stages = stages

    def stage_started(self, exchange: Exchange, stage: str) -> None:
        """Start the request's span at its first step, then the stage's child span."""
        trace: _Trace | None = exchange.notes.get(_NOTE)
        if trace is None:
            trace = self._begin(exchange)
        if not trace.recording or (not self._stages and stage != "forward"):
            if stage == "forward":  # not sampled: the upstream still gets the trace, unsampled
                exchange.notes["trace_headers"] = _headers(trace.context)
            return
        kind = SpanKind.CLIENT if stage == "forward" else SpanKind.INTERNAL
        span = self._tracer.start_span(stage, context=trace.context, kind=kind)
        trace.stages[stage] = span
        if stage == "forward":
            exchange.notes["trace_headers"] = _headers(set_span_in_context(span))

    def stage_ended(self, exchange: Exchange, stage: str, duration_s: float, error: BastionError | None) -> None:
        """End the stage's span (its status says the error); at ``outcome``, end the request's."""
        trace: _Trace | None = exchange.notes.get(_NOTE)
        if trace is None:
            return
        span = trace.stages.pop(stage, None)
        if span is not None:
            if error is not None:
                span.set_attribute("error.type", error.code)
                span.set_status(Status(StatusCode.ERROR, error.code))
            span.end()
        if stage == "outcome":
            self._finish(exchange, trace)

    def _begin(self, exchange: Exchange) -> _Trace:
        parent = _PROPAGATOR.extract(exchange.http.headers)
        http = exchange.http
        attributes: dict[str, Any] = {
            "http.request.method": http.method,
            "url.path": http.path,
            "bastion.route": exchange.route.name,
        }
        if http.client_ip:
            attributes["client.address"] = http.client_ip
        span = self._tracer.start_span(
            f"MCP {exchange.route.name}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        trace = _Trace(span, set_span_in_context(span), span.is_recording())
        exchange.notes[_NOTE] = trace
        context = span.get_span_context()
        if context.is_valid:
            exchange.notes["trace_id"] = format(context.trace_id, "032x")
        return trace

    def _finish(self, exchange: Exchange, trace: _Trace) -> None:
        span = trace.span
        for left in trace.stages.values():  # a stage that never ended (cancelled): close it too
            left.end()
        trace.stages.clear()
        method = exchange.method or exchange.notes.get("label")
        if method:
            span.update_name(f"{method} {exchange.target}" if exchange.target else str(method))
            span.set_attribute("mcp.method.name", str(method))
        attributes: dict[str, Any] = {"bastion.decision_id": exchange.decision_id}
        if exchange.rpc_id is not None:
            attributes["jsonrpc.request.id"] = str(exchange.rpc_id)
        if exchange.session is not None:
            attributes["mcp.session.id"] = exchange.session.id
        if exchange.protocol_version:
            attributes["mcp.protocol.version"] = exchange.protocol_version
        if method == "tools/call" and exchange.target:
            attributes["gen_ai.operation.name"] = "execute_tool"
            attributes["gen_ai.tool.name"] = exchange.target
        decision = exchange.decision
        if decision is not None:
            attributes["bastion.decision"] = decision.effect
            attributes["bastion.policy_ids"] = list(decision.policy_ids)
        reply = exchange.reply
        if reply is not None:
            attributes["http.response.status_code"] = reply.status
        span.set_attributes(attributes)
        error = exchange.error
        if error is not None:
            span.set_attribute("error.type", error.code)
            span.set_status(Status(StatusCode.ERROR, error.code))
        elif exchange.result_error:
            span.set_attribute("error.type", "tool_error")
        span.end()

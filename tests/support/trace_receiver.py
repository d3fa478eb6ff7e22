"""An OTLP/HTTP traces receiver the tests start (``POST /v1/traces``, protobuf), standing in for an
OpenTelemetry Collector: each ``ExportTraceServiceRequest`` is decoded with opentelemetry-proto and its
spans kept in ``spans`` as ``ReceivedSpan``s (ids as lowercase hex, attributes as plain values)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.bastion_process import free_port

__all__ = ["ReceivedSpan", "TraceReceiver"]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector got it; ``kind`` is the OTLP name (``SPAN_KIND_SERVER``, ...)."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    status_code: str = "STATUS_CODE_UNSET"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


class TraceReceiver:
    """The receiver on 127.0.0.1:``port``; ``endpoint`` is its traces URL."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[ReceivedSpan] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def __enter__(self) -> TraceReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                    resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append(ReceivedSpan(
                                name=span.name, kind=Span.SpanKind.Name(span.kind), trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex(),
                                attributes={kv.key: _value(kv.value) for kv in span.attributes},
                                resource=resource, status_code=span.status.StatusCode.Name(span.status.code),
                            ))  # fmt: skip
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

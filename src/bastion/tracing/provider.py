"""The gateway's OpenTelemetry tracer: a provider of its own, exporting over OTLP/HTTP in batches.

``Tracing.build(settings)`` is ``None`` unless ``tracing.enabled`` (then nothing is placed on the
request path at all). Otherwise it holds a ``TracerProvider`` of this gateway's own (never the
process-global one, so a library's spans do not mix in), with the ``service.name`` resource
attribute, a ``ParentBased(TraceIdRatioBased(sample_ratio))`` sampler and a
``BatchSpanProcessor`` that sends to ``tracing.endpoint`` from its own thread: a collector that is
down costs dropped spans, never a slower or refused call. ``shutdown`` sends what is queued.
"""

from __future__ import annotations

import asyncio
import os

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from bastion.config.base import SecretRef
from bastion.config.tracing import TracingSettings
from bastion.tracing.observer import TracingObserver

__all__ = ["Tracing"]

_EXPORT_TIMEOUT_S = 5.0
_SHUTDOWN_TIMEOUT_MS = 5000


class Tracing:
    """A tracer provider and the observer that feeds it (see the module docstring)."""

    def __init__(self, provider: TracerProvider, *, stages: bool = True) -> None:
        self.provider = provider
        self.observer = TracingObserver(provider.get_tracer("bastion"), stages=stages)

    @classmethod
    def build(cls, settings: TracingSettings) -> Tracing | None:
        """The gateway's tracing per ``settings``, or ``None`` when off. Raises ``ConfigError`` when a
        header's secret reference cannot be resolved."""
        if not settings.enabled or settings.endpoint is None:
            return None
        headers = {name: value.resolve() if isinstance(value, SecretRef) else value
                   for name, value in settings.headers.items()}  # fmt: skip
        resource = Resource.create({"service.name": settings.service_name, "service.instance.id": _instance()})
        provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
        exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=headers, timeout=_EXPORT_TIMEOUT_S)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider, stages=settings.stage_spans)

    async def shutdown(self) -> None:
        """Send the spans still queued (at most ``_SHUTDOWN_TIMEOUT_MS``) and stop; off the event loop."""
        await asyncio.to_thread(self.provider.force_flush, _SHUTDOWN_TIMEOUT_MS)
        await asyncio.to_thread(self.provider.shutdown)


def _instance() -> str:
    """``service.instance.id``: this process, on this machine (replicas and workers apart)."""
    return f"{os.uname().nodename}:{os.getpid()}"

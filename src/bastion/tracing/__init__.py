"""OpenTelemetry traces of every request (issue 17): ``Tracing`` (the provider, exporting over
OTLP/HTTP) and ``TracingObserver`` (the spans, fed at the runner's step). Off unless
``tracing.enabled``; docs/architecture.md, "Traces"."""

from bastion.tracing.observer import TracingObserver
from bastion.tracing.provider import Tracing

__all__ = ["Tracing", "TracingObserver"]

"""``tracing:``: OpenTelemetry traces of every request (``bastion.tracing``), off unless configured.

``enabled`` turns them on; ``endpoint`` is the collector's OTLP/HTTP traces URL
(``http://collector:4318/v1/traces``), ``headers`` what it needs (values as text or secret
references: ``{env: NAME}``), ``service_name`` the ``service.name`` resource attribute and
``sample_ratio`` the share of traces started here that are kept (a client's sampled flag in its
``traceparent`` is followed either way: ``ParentBased``). ``stage_spans`` (default true) gives each
stage a child span; false keeps only the request's span and the upstream call's, a fifth of the cost
(docs/architecture.md, "Traces"). Off, no observer is placed and nothing is called per request.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from bastion.config.base import SecretRef, _Model, check_service_url

__all__ = ["TracingSettings"]


class TracingSettings(_Model):
    """``tracing``: ``enabled``, ``endpoint`` (required when enabled), ``headers``, ``service_name``,
    ``sample_ratio`` (0 to 1). Raises (through pydantic, naming the key) for an endpoint that is not an
    ``http``/``https`` URL or is missing while ``enabled``."""

    enabled: bool = False
    endpoint: str | None = None
    headers: dict[str, str | SecretRef] = Field(default_factory=dict)
    service_name: str = Field(default="bastion", min_length=1, max_length=200)
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    stage_spans: bool = True

    @model_validator(mode="after")
    def _endpoint(self) -> TracingSettings:
        if self.endpoint is not None:
            check_service_url(self.endpoint, ("http", "https"), "tracing.endpoint",
                              "an OTLP/HTTP traces URL such as http://collector:4318/v1/traces",
                              "tracing.headers")  # fmt: skip
        elif self.enabled:
            raise ValueError("tracing.endpoint: required when tracing.enabled is true (an OTLP/HTTP traces URL)")
        return self

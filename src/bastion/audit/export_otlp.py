"""The OpenTelemetry sink: each record as an OTLP log record, POSTed to a collector over OTLP/HTTP.

A batch is one ``ExportLogsServiceRequest`` (opentelemetry-proto) with binary protobuf encoding
(``Content-Type: application/x-protobuf``; OTLP specification, "OTLP/HTTP"): one resource
(``service.name`` ``bastion``, ``host.name``), one scope (``bastion.audit``), and per record
(``encode_logs``, sans-IO):

- ``time_unix_nano`` the record's ``time``; ``observed_time_unix_nano`` when it was exported;
- ``severity_number`` WARN (13) for a deny decision, INFO (9) for every other record;
- ``body`` the stored record's JSON as a string (the exact text its ``hash`` covers);
- ``event_name`` ``bastion.audit.<kind>``; attributes ``bastion.audit.seq`` (int, the
  de-duplication key), ``bastion.audit.hash``, ``bastion.audit.kind``, ``bastion.audit.decision_id``;
- ``trace_id`` the record's W3C trace id when it has one.

The batch was accepted when the collector answers 2xx. Any other answer or a connection failure
raises ``SinkUnavailable``, and the exporter sends the batch again after a backoff: OTLP calls 429,
502, 503 and 504 retryable and the rest not, but dropping records the collector refused would break
the at-least-once promise, so a refusing collector holds the cursor (and is logged) until it is
fixed. A ``partial_success`` with rejected records is logged: the collector said it dropped them.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import httpx2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

from bastion.audit.export import ExportRecord, SinkUnavailable

__all__ = ["OtlpSink", "encode_logs"]

logger = logging.getLogger(__name__)

_SCOPE = "bastion.audit"
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_WARN = SeverityNumber.SEVERITY_NUMBER_WARN
_INFO = SeverityNumber.SEVERITY_NUMBER_INFO


def _text(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _nanos(stamp: object) -> int:
    """An RFC 3339 UTC time as nanoseconds since the epoch (0, "unknown", when it is not one)."""
    if not isinstance(stamp, str):
        return 0
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if moment.tzinfo is None:
        return 0
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def encode_logs(records: Sequence[ExportRecord], *, hostname: str, observed_ns: int) -> ExportLogsServiceRequest:
    """``records`` as one OTLP logs request (module docstring); ``observed_ns`` stamps them all."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend([_text("service.name", "bastion"), _text("host.name", hostname)])
    scope = resource_logs.scope_logs.add()
    scope.scope.name = _SCOPE
    for record in records:  # each message built in place (add), not built and then copied in
        body = record.record
        kind = str(body.get("kind", ""))
        decision = body.get("decision")
        denied = kind == "decision" and isinstance(decision, dict) and decision.get("effect") == "deny"
        log = scope.log_records.add(
            time_unix_nano=_nanos(body.get("time")),
            observed_time_unix_nano=observed_ns,
            severity_number=_WARN if denied else _INFO,
            severity_text="WARN" if denied else "INFO",
            event_name=f"{_SCOPE}.{kind}",
        )
        log.body.string_value = record.text
        attributes = log.attributes
        attributes.add(key="bastion.audit.seq").value.int_value = record.seq
        attributes.add(key="bastion.audit.hash").value.string_value = record.hash
        attributes.add(key="bastion.audit.kind").value.string_value = kind
        attributes.add(key="bastion.audit.decision_id").value.string_value = str(body.get("decision_id", ""))
        trace_id = body.get("trace_id")
        if isinstance(trace_id, str) and _TRACE_ID.match(trace_id):
            log.trace_id = bytes.fromhex(trace_id)
    return request


class OtlpSink:
    """``Sink`` POSTing OTLP/HTTP protobuf log requests to ``endpoint`` (module docstring), with
    ``headers`` on each request; ``ca_file`` trusts a private CA for https."""

    def __init__(
        self, endpoint: str, *, headers: Mapping[str, str] | None = None, ca_file: Path | None = None,
        timeout_s: float = 10.0,
    ) -> None:  # fmt: skip
        self.endpoint = endpoint
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self._client = httpx2.AsyncClient(
            headers={**(headers or {}), "Content-Type": "application/x-protobuf"},
            verify=verify, timeout=timeout_s, trust_env=False,
        )  # fmt: skip
        self._hostname = socket.gethostname()

    async def send(self, records: Sequence[ExportRecord]) -> None:
        """See ``Sink.send``: accepted on a 2xx answer; ``SinkUnavailable`` otherwise."""
        request = encode_logs(records, hostname=self._hostname, observed_ns=time.time_ns())
        try:
            response = await self._client.post(self.endpoint, content=request.SerializeToString())
        except httpx2.HTTPError as exc:
            raise SinkUnavailable(f"OTLP {self.endpoint}: {exc or type(exc).__name__}") from exc
        if not 200 <= response.status_code < 300:
            raise SinkUnavailable(f"OTLP {self.endpoint}: HTTP {response.status_code}")
        answer = ExportLogsServiceResponse()
        try:
            answer.ParseFromString(response.content)
        except Exception:  # noqa: BLE001 - a 2xx with an odd body still accepted the batch
            return
        rejected = answer.partial_success.rejected_log_records
        if rejected:
            logger.warning("OTLP %s dropped %d of %d audit records: %s", self.endpoint, rejected, len(records),
                           answer.partial_success.error_message)  # fmt: skip

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

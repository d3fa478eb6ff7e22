"""The OTLP encoding of audit records (``bastion.audit.export_otlp.encode_logs``): one request, each record
a log record with its time, severity, body, event name, de-duplication attributes and trace id."""

from __future__ import annotations

import json

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

from bastion.audit.export import ExportRecord
from bastion.audit.export_otlp import encode_logs

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _attributes(log: object) -> dict[str, object]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in log.attributes}  # type: ignore[attr-defined]


def test_records_become_log_records_that_survive_the_wire() -> None:
    deny = json.dumps({"kind": "decision", "seq": 1, "time": "2026-05-09T07:35:25.123456Z", "decision_id": "d-1",
                       "trace_id": TRACE, "decision": {"effect": "deny"}})  # fmt: skip
    outcome = json.dumps({"kind": "outcome", "seq": 2, "time": "2026-05-09T07:35:26.000001Z", "decision_id": "d-1"})
    request = encode_logs([ExportRecord(1, "aa" * 32, deny), ExportRecord(2, "bb" * 32, outcome)],
                          hostname="gw-1", observed_ns=123)  # fmt: skip
    wire = ExportLogsServiceRequest.FromString(request.SerializeToString())
    (resource_logs,) = wire.resource_logs
    assert {kv.key: kv.value.string_value for kv in resource_logs.resource.attributes} == {
        "service.name": "bastion", "host.name": "gw-1"}  # fmt: skip
    (scope,) = resource_logs.scope_logs
    assert scope.scope.name == "bastion.audit"
    first, second = scope.log_records
    assert first.time_unix_nano == 1778312125_123456000
    assert first.observed_time_unix_nano == 123
    assert (first.severity_number, first.severity_text) == (SeverityNumber.SEVERITY_NUMBER_WARN, "WARN")
    assert first.body.string_value == deny  # the stored text, byte for byte
    assert first.event_name == "bastion.audit.decision"
    assert _attributes(first) == {"bastion.audit.seq": 1, "bastion.audit.hash": "aa" * 32,
                                  "bastion.audit.kind": "decision", "bastion.audit.decision_id": "d-1"}  # fmt: skip
    assert first.trace_id.hex() == TRACE
    assert (second.severity_number, second.event_name) == (SeverityNumber.SEVERITY_NUMBER_INFO, "bastion.audit.outcome")
    assert second.trace_id == b""
    assert second.time_unix_nano == 1778312126_000001000

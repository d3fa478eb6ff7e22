"""``server.argument_limits`` in the request path: the transport stage refuses, the audit stage
records the digest and the sizes, never the arguments (the real stages; the audit log is a list)."""

from __future__ import annotations

import gc
import json
import weakref
from typing import Any

import pytest

from bastion import audit
from bastion.audit.build import as_model, decision_body
from bastion.audit.canonical import arguments_sha256
from bastion.audit.record import event_body
from bastion.config import HttpUpstream, RouteSettings
from bastion.config.limits import ArgumentLimits
from bastion.errors import ArgumentsTooLarge
from bastion.pipeline.context import Exchange, HttpRequest
from bastion.pipeline.filters import MessageInspector
from bastion.pipeline.runner import Pipeline, error_reply
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.transport import TransportStage
from bastion.transport.checks import OriginPolicy
from bastion.transport.routes import RouteRuntime

LIMITS = ArgumentLimits(max_members=100)
SIZES = {"depth": 1, "members": 101, "elements": 0, "string_chars": 0, "nodes": 102, "exceeded": "max_members",
         "limit": 100}  # fmt: skip


class ListLog:
    """The audit log as a list of validated records."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append_nowait(self, body: dict[str, Any]) -> None:
        as_model(body)
        self.records.append(body)


def _exchange(arguments: Any, method: str = "tools/call") -> Exchange:
    message = {"jsonrpc": "2.0", "id": 9, "method": method, "params": {"name": "t", "arguments": arguments}}
    headers = {"host": "127.0.0.1:8080", "content-type": "application/json", "accept": "application/json"}
    request = HttpRequest(
        "POST", "/mcp/notes", headers, tuple(headers.items()), "127.0.0.1", json.dumps(message).encode()
    )
    route = RouteRuntime(
        settings=RouteSettings(name="notes", http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True)),
        resource_uri="http://127.0.0.1:8080/mcp/notes",
        metadata_url="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp/notes",
    )
    return Exchange(route=route, http=request)


def _transport() -> TransportStage:
    return TransportStage(OriginPolicy.for_listener("http://127.0.0.1:8080", 8080), LIMITS)


@pytest.mark.parametrize("method", ["tools/call", "prompts/get"])
async def test_over_a_limit_the_call_is_refused_and_recorded_by_digest_and_sizes(method: str) -> None:
    arguments = {f"k{i}": "hunter2-secret" for i in range(101)}
    exchange = _exchange(arguments, method)
    with pytest.raises(ArgumentsTooLarge) as caught:
        await _transport().run(exchange)
    exchange.error = caught.value
    reply = error_reply(exchange, caught.value)
    assert reply.status == 400
    assert reply.message["error"]["code"] == -32602
    assert reply.message["id"] == 9

    log = ListLog()
    await AuditStage(log, policy_version="v1").record_denied(exchange)  # type: ignore[arg-type]
    (record,) = log.records
    assert record["arguments"] is None
    assert record["arguments_sha256"] == arguments_sha256(arguments)
    assert record["decision"]["reason"] == "arguments_too_large"
    assert record["decision"]["argument_sizes"] == SIZES
    assert "hunter2" not in json.dumps(record)


async def test_within_the_limits_nothing_is_noted_and_the_arguments_are_stored_redacted() -> None:
    exchange = _exchange({"password": "hunter2", "n": 1})
    await _transport().run(exchange)
    assert "argument_sizes" not in exchange.notes
    log = ListLog()
    await AuditStage(log, policy_version="v1").record_denied(exchange)  # type: ignore[arg-type]
    (record,) = log.records
    assert record["arguments"] == {"password": "[REDACTED:secret_field]", "n": 1}
    assert "argument_sizes" not in record["decision"]


def test_the_sizes_body_equals_the_model() -> None:
    fast = decision_body(
        route="notes", method="tools/call", effect="deny", policy_ids=(), obligations={},
        reason="arguments_too_large", policy_version="v", arguments={"a": 1}, principal=None, target="t",
        session=None, decision_id="d" * 32, store_arguments=False, argument_sizes=SIZES,
    )  # fmt: skip
    event = audit.DecisionEvent.create(
        route="notes", method="tools/call", arguments={"a": 1}, target="t", decision_id="d" * 32,
        store_arguments=False,
        decision=audit.Decision(effect="deny", reason="arguments_too_large", policy_version="v",
                                argument_sizes=SIZES),  # type: ignore[arg-type]
    )  # fmt: skip
    model = event_body(event)
    assert {k: v for k, v in fast.items() if k not in ("id", "time")} == {
        k: v for k, v in model.items() if k not in ("id", "time")
    }
    assert as_model(fast).decision.argument_sizes == SIZES  # type: ignore[union-attr]


class _Payload:
    """Stands for a large parsed body; weakly referenceable, so the test can see it freed."""


async def test_a_refused_request_is_freed_at_once_not_at_the_next_full_collection() -> None:
    """The error's traceback must not tie the exchange (and the body it parsed) into a cycle."""
    audit_stage = AuditStage(ListLog(), policy_version="v1")  # type: ignore[arg-type]
    pipeline = Pipeline(
        [_transport()],
        audit=audit_stage,
        forward=_transport(),
        inspector=MessageInspector([], on_drop=audit_stage.record_dropped),
    )
    exchange = _exchange({f"k{i}": i for i in range(101)})
    payload = _Payload()
    exchange.notes["payload"] = payload
    alive = weakref.ref(payload)
    del payload
    gc.disable()
    try:
        await pipeline.handle(exchange)
        assert exchange.error is not None
        assert exchange.error.__traceback__ is None
        del exchange
        assert alive() is None
    finally:
        gc.enable()

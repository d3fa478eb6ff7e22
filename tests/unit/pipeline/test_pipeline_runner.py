"""Tests of ``bastion.pipeline.runner``: fail closed, error mapping, 401 challenges, audit before forward.

The audit log and the stages are fakes; ``AuditStage`` is the real one writing to the fake log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bastion import audit
from bastion.audit.build import as_model
from bastion.config import HttpUpstream, RouteSettings
from bastion.errors import (
    AuditUnavailable,
    AuthenticationError,
    BastionError,
    BatchRejected,
    BodyTooLarge,
    ForbiddenOrigin,
    HeaderMismatch,
    NotAcceptable,
    ParseError,
    PolicyDenied,
    SessionNotFound,
    SessionRequired,
    TransportError,
    UnsupportedMediaType,
    UnsupportedVersion,
    UpstreamError,
    UpstreamUnavailable,
)
from bastion.pipeline.context import EmptyReply, Exchange, HttpRequest, JsonReply, SseEvent, SseReply
from bastion.pipeline.filters import MessageInspector
from bastion.pipeline.runner import Pipeline, error_reply
from bastion.pipeline.stages import audit as audit_stage
from bastion.pipeline.stages.audit import AuditStage
from bastion.policy import Decision
from bastion.principal import Principal
from bastion.transport.routes import RouteRuntime

METADATA = "http://gw.test/.well-known/oauth-protected-resource/mcp/notes"
ALICE = Principal(kind="User", sub="alice", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0)


class FakeAuditLog:
    """Records what the audit stage writes; ``fail`` makes ``append`` (the durable write) raise."""

    def __init__(self, *, fail: bool = False, fail_nowait: bool = False) -> None:
        self.fail = fail
        self.fail_nowait = fail_nowait
        self.durable: list[audit.AuditEvent] = []
        self.queued: list[audit.AuditEvent] = []

    async def append(self, event: audit.AuditEvent | dict[str, Any]) -> None:
        if self.fail:
            raise AuditUnavailable("disk full")
        self.durable.append(_as_model(event))

    def append_nowait(self, event: audit.AuditEvent | dict[str, Any]) -> None:
        if self.fail_nowait:
            raise AuditUnavailable("the audit log is not running")
        self.queued.append(_as_model(event))


def _as_model(event: audit.AuditEvent | dict[str, Any]) -> audit.AuditEvent:
    """Bodies built on the request path are validated against the record schema here."""
    return as_model(event) if isinstance(event, dict) else event


class FnStage:
    """A stage running ``fn``; counts its calls."""

    def __init__(self, name: str, fn: Callable[[Exchange], Any] | None = None) -> None:
        self.name = name
        self.fn = fn
        self.calls = 0

    async def run(self, exchange: Exchange) -> None:
        self.calls += 1
        if self.fn is not None:
            self.fn(exchange)


class FnFilter:
    """A message filter running ``fn`` on the exchange; counts its calls and relays the message."""

    def __init__(self, name: str, fn: Callable[[Exchange], Any] | None = None) -> None:
        self.name = name
        self.fn = fn
        self.calls = 0

    async def apply(self, exchange: Exchange, message: dict[str, Any], answered: Any) -> dict[str, Any] | None:
        self.calls += 1
        if self.fn is not None:
            self.fn(exchange)
        return message


def _raise(error: BaseException) -> Callable[[Exchange], None]:
    def fn(_: Exchange) -> None:
        raise error

    return fn


def _parse(exchange: Exchange) -> None:
    exchange.message = json.loads(exchange.http.body)
    exchange.kind = "request" if "id" in exchange.message else "notification"  # type: ignore[assignment]


def _login(exchange: Exchange) -> None:
    exchange.principal = ALICE


def _allow(exchange: Exchange) -> None:
    exchange.decision = Decision("allow", ("p",))


def _route() -> RouteRuntime:
    return RouteRuntime(
        settings=RouteSettings(name="notes", http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True)),
        resource_uri="http://gw.test/mcp/notes",
        metadata_url=METADATA,
    )


def _exchange(message: Any = None) -> Exchange:
    body = json.dumps(message if message is not None else {"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
    request = HttpRequest("POST", "/mcp/notes", {"host": "gw.test"}, (("host", "gw.test"),), "127.0.0.1", body.encode())
    return Exchange(route=_route(), http=request)


class Rig:
    """A pipeline of fake stages around the real audit stage."""

    def __init__(self, *, log: FakeAuditLog | None = None, failing: FnStage | None = None) -> None:
        self.log = log or FakeAuditLog()
        self.audit = AuditStage(self.log, policy_version="v1")  # type: ignore[arg-type]
        self.before = [FnStage("transport", _parse), FnStage("authenticate", _login)]
        if failing is not None:
            self.before.append(failing)
        self.before.append(FnStage("authorize", _allow))
        self.seen_durable_at_forward: int | None = None
        self.forward = FnStage("forward", self._forward)
        self.inspect = FnFilter("list")
        inspector = MessageInspector([self.inspect], on_drop=self.audit.record_dropped)
        self.pipeline = Pipeline(self.before, audit=self.audit, forward=self.forward, inspector=inspector)
        self.forward_reply: Any = None

    def _forward(self, exchange: Exchange) -> None:
        self.seen_durable_at_forward = len(self.log.durable)
        exchange.upstream_status = 200
        if self.forward_reply is not None:
            exchange.reply = self.forward_reply
        else:
            exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": exchange.rpc_id, "result": {"tools": []}})

    async def run(self, exchange: Exchange | None = None) -> Exchange:
        exchange = exchange or _exchange()
        await self.pipeline.handle(exchange)
        return exchange


def _body(exchange: Exchange) -> dict[str, Any]:
    reply = exchange.reply
    assert isinstance(reply, JsonReply)
    assert isinstance(reply.message, dict)
    return reply.message


# --- the happy path --------------------------------------------------------------------------


async def test_the_decision_is_committed_before_forwarding_and_the_outcome_after() -> None:
    rig = Rig()
    exchange = await rig.run()
    assert rig.seen_durable_at_forward == 1
    assert rig.inspect.calls == 1
    assert exchange.audited
    decision = rig.log.durable[0]
    assert isinstance(decision, audit.DecisionEvent)
    assert decision.decision.effect == "allow"
    assert decision.method == "tools/list"
    await rig.pipeline.finish(exchange)
    assert len(rig.log.queued) == 1
    outcome = rig.log.queued[0]
    assert isinstance(outcome, audit.OutcomeEvent)
    assert outcome.decision_id == decision.decision_id
    assert outcome.result.error is False


async def test_no_reply_from_forward_is_a_202() -> None:
    rig = Rig()
    rig.forward_reply = None
    rig.forward.fn = lambda exchange: None
    exchange = await rig.run(_exchange({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    assert isinstance(exchange.reply, EmptyReply)
    assert exchange.reply.status == 202


async def test_a_tool_error_result_is_noted_for_the_outcome() -> None:
    rig = Rig()
    rig.forward_reply = JsonReply(200, {"jsonrpc": "2.0", "id": 7, "result": {"isError": True, "content": []}})
    exchange = await rig.run()
    assert exchange.result_error is True


async def test_sse_results_are_watched_for_errors() -> None:
    async def events() -> AsyncIterator[SseEvent]:
        yield SseEvent(message={"jsonrpc": "2.0", "method": "notifications/progress"})
        yield SseEvent(message={"jsonrpc": "2.0", "id": 7, "error": {"code": -1, "message": "x"}})

    rig = Rig()
    rig.forward_reply = SseReply(200, events())
    exchange = await rig.run()
    assert isinstance(exchange.reply, SseReply)
    assert exchange.result_error is False
    seen = [event async for event in exchange.reply.events]
    assert len(seen) == 2
    assert exchange.result_error is True


# --- fail closed -----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyError("k"), ValueError("v"), ZeroDivisionError()])
async def test_a_plain_exception_in_a_stage_is_a_500_deny_that_is_audited(error: Exception) -> None:
    failing = FnStage("classify", _raise(error))
    rig = Rig(failing=failing)
    exchange = await rig.run()
    reply = exchange.reply
    assert isinstance(reply, JsonReply)
    assert 500 <= reply.status < 600
    body = _body(exchange)
    assert body["jsonrpc"] == "2.0"
    assert body["id"] == 7
    assert body["error"] == {"code": -32603, "message": "Internal error in classify"}
    assert "Traceback" not in json.dumps(body)
    assert exchange.notes["failed_stage"] == "classify"
    assert rig.forward.calls == 0
    assert rig.before[-1].calls == 0  # authorize never ran
    assert rig.log.durable == []
    assert len(rig.log.queued) == 1
    record = rig.log.queued[0]
    assert isinstance(record, audit.DecisionEvent)
    assert record.decision.effect == "deny"
    assert record.decision.reason == "internal_error"
    assert exchange.error is not None
    assert exchange.error.__cause__ is error


async def test_an_exception_in_forward_is_a_500_and_skips_inspection() -> None:
    rig = Rig()
    rig.forward.fn = _raise(RuntimeError("upstream client bug"))
    exchange = await rig.run()
    assert isinstance(exchange.reply, JsonReply)
    assert exchange.reply.status == 500
    assert rig.inspect.calls == 0
    assert exchange.result_error is True
    await rig.pipeline.finish(exchange)
    outcome = rig.log.queued[-1]
    assert isinstance(outcome, audit.OutcomeEvent)
    assert outcome.result.error is True
    assert outcome.result.error_code == "internal_error"


async def test_an_exception_in_inspect_is_a_500() -> None:
    rig = Rig()
    rig.inspect.fn = _raise(TypeError("bad list"))
    exchange = await rig.run()
    assert isinstance(exchange.reply, JsonReply)
    assert exchange.reply.status == 500
    assert _body(exchange)["error"]["message"] == "Internal error in inspect"


ERRORS: list[tuple[BastionError, int, int]] = [
    (TransportError("bad"), 400, -32600),
    (ParseError("bad json"), 400, -32700),
    (BatchRejected("batch"), 400, -32600),
    (BodyTooLarge("big"), 413, -32600),
    (HeaderMismatch("mismatch"), 400, -32020),
    (UnsupportedVersion("version"), 400, -32022),
    (UnsupportedMediaType("media"), 415, -32600),
    (NotAcceptable("accept"), 406, -32600),
    (SessionRequired("session"), 400, -32600),
    (ForbiddenOrigin("origin"), 403, -32600),
    (AuthenticationError("bad_signature"), 401, -32001),
    (SessionNotFound("gone"), 404, -32001),
    (PolicyDenied("denied", data={"policies": ["p1"]}), 200, -32003),
    (AuditUnavailable("audit"), 503, -32603),
    (UpstreamError("upstream"), 502, -32603),
    (UpstreamUnavailable("down"), 503, -32603),
    (TransportError("params", jsonrpc_code=-32602), 400, -32602),
]


@pytest.mark.parametrize(("error", "status", "code"), ERRORS, ids=[type(e[0]).__name__ for e in ERRORS])
async def test_a_bastion_error_maps_to_its_status_and_code(error: BastionError, status: int, code: int) -> None:
    rig = Rig(failing=FnStage("authorize-ish", _raise(error)))
    exchange = await rig.run()
    reply = exchange.reply
    assert isinstance(reply, JsonReply)
    assert reply.status == status
    body = _body(exchange)
    assert body["error"]["code"] == code
    assert body["error"]["message"] == error.message
    assert body["id"] == 7
    assert rig.forward.calls == 0
    assert exchange.error is error
    record = rig.log.queued[0]
    assert isinstance(record, audit.DecisionEvent)
    assert record.decision.reason == error.code


async def test_error_data_is_passed_to_the_client() -> None:
    rig = Rig(failing=FnStage("authorize", _raise(PolicyDenied("Denied by policy p1", data={"policies": ["p1"]}))))
    exchange = await rig.run()
    assert _body(exchange)["error"] == {"code": -32003, "message": "Denied by policy p1", "data": {"policies": ["p1"]}}


async def test_errors_for_notifications_and_unparsed_bodies_have_a_null_id() -> None:
    rig = Rig(failing=FnStage("x", _raise(SessionRequired("no session"))))
    exchange = await rig.run(_exchange({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    assert _body(exchange)["id"] is None
    rig = Rig()
    rig.before[0].fn = _raise(ParseError("Parse error"))
    exchange = await rig.run()
    assert _body(exchange)["id"] is None


async def test_a_stage_that_sets_a_reply_ends_the_request_without_forwarding() -> None:
    rig = Rig(failing=FnStage("transport-202", lambda exchange: setattr(exchange, "reply", EmptyReply(202))))
    exchange = await rig.run()
    assert isinstance(exchange.reply, EmptyReply)
    assert rig.forward.calls == 0
    assert rig.before[-1].calls == 0
    assert len(rig.log.queued) == 1


async def test_recording_a_deny_never_raises_even_when_the_log_is_down() -> None:
    rig = Rig(log=FakeAuditLog(fail_nowait=True), failing=FnStage("x", _raise(PolicyDenied("no"))))
    exchange = await rig.run()
    assert isinstance(exchange.reply, JsonReply)
    assert exchange.reply.status == 200
    assert not exchange.audited


# --- 401 challenges --------------------------------------------------------------------------


def test_a_missing_token_gets_a_bare_bearer_challenge() -> None:
    reply = error_reply(_exchange(), AuthenticationError("missing_token", "no bearer token"))
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA}"'
    assert "invalid_token" not in reply.headers["www-authenticate"]


@pytest.mark.parametrize("reason", ["bad_signature", "expired", "wrong_audience", "revoked", "malformed"])
def test_an_invalid_token_says_so_in_the_challenge(reason: str) -> None:
    reply = error_reply(_exchange(), AuthenticationError(reason))
    assert reply.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA}", error="invalid_token"'
    assert reply.message["error"]["code"] == -32001


def test_other_errors_carry_no_challenge() -> None:
    assert "www-authenticate" not in error_reply(_exchange(), SessionNotFound("x")).headers


async def test_the_runner_sends_the_challenge_of_a_failing_authenticate_stage() -> None:
    rig = Rig()
    rig.before[1].fn = _raise(AuthenticationError("missing_token"))
    exchange = await rig.run()
    reply = exchange.reply
    assert isinstance(reply, JsonReply)
    assert reply.status == 401
    assert reply.headers == {"www-authenticate": f'Bearer resource_metadata="{METADATA}"'}
    record = rig.log.queued[0]
    assert isinstance(record, audit.DecisionEvent)
    assert record.decision.reason == "unauthenticated"
    assert record.principal is None


# --- the audit stage refuses to forward ------------------------------------------------------


async def test_an_audit_log_that_cannot_commit_refuses_the_call() -> None:
    rig = Rig(log=FakeAuditLog(fail=True))
    exchange = await rig.run()
    reply = exchange.reply
    assert isinstance(reply, JsonReply)
    assert reply.status == 503
    assert _body(exchange)["error"]["code"] == -32603
    assert rig.forward.calls == 0
    assert rig.inspect.calls == 0
    assert not exchange.audited
    assert exchange.notes["failed_stage"] == "audit"


async def test_an_audit_record_that_cannot_be_built_refuses_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_: Any) -> dict[str, Any]:
        raise ValueError("not a JSON value")

    monkeypatch.setattr(audit_stage, "decision_body", broken)
    rig = Rig()
    exchange = await rig.run()
    assert rig.forward.calls == 0
    assert isinstance(exchange.reply, JsonReply)
    assert exchange.reply.status == 503
    assert isinstance(exchange.error, AuditUnavailable)


async def test_a_request_audited_as_denied_is_never_forwarded() -> None:
    rig = Rig()
    rig.before[-1].fn = lambda exchange: None  # an authorize stage that forgot to decide
    exchange = await rig.run()
    record = rig.log.durable[0] if rig.log.durable else rig.log.queued[0]
    assert isinstance(record, audit.DecisionEvent)
    assert record.decision.effect == "deny"
    assert rig.forward.calls == 0
    assert exchange.reply is not None


async def test_tool_arguments_are_recorded_redacted_with_their_digest() -> None:
    rig = Rig()
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "login", "arguments": {"user": "a", "password": "hunter2"}},
    }
    await rig.run(_exchange(message))
    record = rig.log.durable[0]
    assert isinstance(record, audit.DecisionEvent)
    assert record.arguments_sha256 == audit.arguments_sha256({"user": "a", "password": "hunter2"})
    assert "hunter2" not in json.dumps(record.arguments)


# --- an upstream that fails in the middle of a stream ----------------------------------------


def _breaking(*messages: dict[str, Any]) -> AsyncIterator[SseEvent]:
    async def events() -> AsyncIterator[SseEvent]:
        for message in messages:
            yield SseEvent(message=message)
        raise UpstreamUnavailable("upstream failed mid-stream: ClientPayloadError")

    return events()


async def test_a_stream_the_upstream_breaks_ends_with_an_error_for_the_request_and_in_the_outcome() -> None:
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "t", "progress": 1}}
    rig = Rig()
    rig.forward_reply = SseReply(200, _breaking(progress))
    exchange = await rig.run()
    assert isinstance(exchange.reply, SseReply)
    relayed = [event.message async for event in exchange.reply.events]
    assert relayed[0] == progress
    assert relayed[1]["id"] == 7
    assert relayed[1]["error"]["code"] == UpstreamUnavailable.jsonrpc_code
    assert len(relayed) == 2
    await rig.pipeline.finish(exchange)
    outcome = rig.log.queued[-1]
    assert isinstance(outcome, audit.OutcomeEvent)
    assert outcome.result.error is True
    assert outcome.result.error_code == "upstream_unavailable"


async def test_a_stream_broken_after_its_answer_adds_no_second_answer() -> None:
    rig = Rig()
    rig.forward_reply = SseReply(200, _breaking({"jsonrpc": "2.0", "id": 7, "result": {"tools": []}}))
    exchange = await rig.run()
    assert isinstance(exchange.reply, SseReply)
    relayed = [event.message async for event in exchange.reply.events]
    assert [message.get("id") for message in relayed] == [7]
    assert "result" in relayed[0]


# --- the observer at the runner's step ---------------------------------------------------------


class Recorder:
    """A step observer keeping every start and end it is told of."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None]] = []
        self.durations: list[float] = []

    def stage_started(self, exchange: Exchange, stage: str) -> None:
        self.events.append(("start", stage, None))

    def stage_ended(self, exchange: Exchange, stage: str, duration_s: float, error: BastionError | None) -> None:
        self.events.append(("end", stage, error.code if error is not None else None))
        self.durations.append(duration_s)


def _observed(rig: Rig, observer: Any) -> Pipeline:
    inspector = rig.pipeline.inspector
    return Pipeline(rig.before, audit=rig.audit, forward=rig.forward, inspector=inspector, observer=observer)


async def test_the_observer_sees_every_stage_start_and_end_in_order() -> None:
    rig, recorder = Rig(), Recorder()
    await _observed(rig, recorder).handle(_exchange())
    names = ["transport", "authenticate", "authorize", "audit", "forward", "inspect"]
    assert recorder.events == [e for name in names for e in (("start", name, None), ("end", name, None))]
    assert all(d >= 0 for d in recorder.durations)


async def test_the_observer_sees_the_error_code_of_the_stage_that_failed() -> None:
    rig, recorder = Rig(failing=FnStage("session", _raise(SessionNotFound("Session not found")))), Recorder()
    await _observed(rig, recorder).handle(_exchange())
    assert recorder.events[-1] == ("end", "session", "session_not_found")
    assert ("start", "forward", None) not in recorder.events


async def test_an_observer_that_raises_changes_nothing() -> None:
    class Broken(Recorder):
        def stage_ended(self, exchange: Exchange, stage: str, duration_s: float, error: BastionError | None) -> None:
            raise RuntimeError("metrics backend down")

    rig = Rig()
    exchange = _exchange()
    await _observed(rig, Broken()).handle(exchange)
    assert _body(exchange)["result"] == {"tools": []}
    assert rig.forward.calls == 1


async def test_a_flood_of_dropped_messages_leaves_a_bounded_number_of_records() -> None:
    async def flood() -> AsyncIterator[SseEvent]:
        for rpc_id in range(1000, 1040):
            yield SseEvent(message={"jsonrpc": "2.0", "id": rpc_id, "result": {}})
        yield SseEvent(message={"jsonrpc": "2.0", "id": 7, "result": {"tools": []}})

    rig = Rig()
    rig.forward_reply = SseReply(200, flood())
    exchange = await rig.run()
    assert isinstance(exchange.reply, SseReply)
    relayed = [event.message async for event in exchange.reply.events if event.message is not None]
    assert [m["id"] for m in relayed] == [7]
    reasons = [e.decision.reason for e in rig.log.queued if isinstance(e, audit.DecisionEvent)]
    assert reasons == ["unsolicited_response"] * audit_stage.MAX_DROP_RECORDS + ["drops_capped"]
    assert exchange.notes["dropped"] == 40

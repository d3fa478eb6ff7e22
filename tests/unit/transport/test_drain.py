"""The graceful stop (``bastion.transport.drain``) through ``McpEndpoint``: once ``Drain.begin`` runs, a call
in flight finishes if it can within ``drain_s`` and is cut with ``shutting_down`` otherwise (its JSON reply,
or the last event of its SSE answer, and its outcome record say so); a GET event stream ends at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from tests.support.audit_fakes import RecordingAuditLog
from transport_asgi import Sink

from bastion.config import RouteSettings, StdioUpstream
from bastion.pipeline.context import Exchange, JsonReply, SseEvent, SseReply
from bastion.pipeline.plan import assemble
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.authorize import SESSION_DECISION
from bastion.transport.drain import Drain
from bastion.transport.endpoint import McpEndpoint
from bastion.transport.routes import RouteRuntime

CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "deploy", "arguments": {}}}


class Allow:
    """The checks' stand-in: the call is a request, allowed."""

    name = "transport"

    async def run(self, exchange: Exchange) -> None:
        exchange.message, exchange.kind = CALL, "request"
        exchange.decision = SESSION_DECISION


class SlowUpstream:
    """A forward stage answering after ``delay_s`` (JSON), or streaming ``progress`` events
    ``gap_s`` apart and then the answer (SSE); ``started`` is set once it runs."""

    name = "forward"

    def __init__(self, *, delay_s: float = 0.0, sse: bool = False, progress: int = 0, gap_s: float = 0.0) -> None:
        self.delay_s, self.sse, self.progress, self.gap_s = delay_s, sse, progress, gap_s
        self.started = asyncio.Event()

    async def run(self, exchange: Exchange) -> None:
        self.started.set()
        answer = {"jsonrpc": "2.0", "id": CALL["id"], "result": {"content": [], "isError": False}}
        if not self.sse:
            await asyncio.sleep(self.delay_s)
            exchange.reply = JsonReply(200, answer)
            return

        async def events() -> AsyncIterator[SseEvent]:
            for n in range(self.progress):
                await asyncio.sleep(self.gap_s)
                yield SseEvent(message={"jsonrpc": "2.0", "method": "notifications/progress",
                                        "params": {"progressToken": 1, "progress": n}})  # fmt: skip
            yield SseEvent(message=answer)

        exchange.reply = SseReply(200, events())


def _endpoint(upstream: SlowUpstream, drain: Drain, log: RecordingAuditLog) -> McpEndpoint:
    route = RouteRuntime(
        settings=RouteSettings(name="r", stdio=StdioUpstream(command="true")),
        resource_uri="http://127.0.0.1:8080/mcp/r",
        metadata_url="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp/r",
    )
    pipelines = assemble(
        checks={"transport": Allow()},
        stream_checks={},
        forward={"POST": upstream, "GET": upstream, "DELETE": upstream},
        filters={},
        audit=AuditStage(log, policy_version="v1"),  # type: ignore[arg-type]
    )
    return McpEndpoint(route, pipelines, max_body=4096, drain=drain)


async def _post(endpoint: McpEndpoint) -> Sink:
    """POST ``CALL``; the client stays connected until the reply is complete."""
    body = json.dumps(CALL).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/mcp/r",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
    }
    sent = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # connected until cancelled
        return {"type": "http.disconnect"}

    sink = Sink()
    await endpoint(scope, receive, sink)
    return sink


def _sse_messages(sink: Sink) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in sink.body.decode().splitlines() if line.startswith("data:")]


async def _stop_while_running(upstream: SlowUpstream, drain_s: float) -> tuple[Sink, RecordingAuditLog, float]:
    """POST a call, begin the drain once the upstream runs; the reply, the log and the seconds from
    ``begin`` to the reply's end."""
    log, drain = RecordingAuditLog(), Drain(drain_s)
    call = asyncio.create_task(_post(_endpoint(upstream, drain, log)))
    await asyncio.wait_for(upstream.started.wait(), timeout=5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    drain.begin()
    sink = await asyncio.wait_for(call, timeout=10)
    return sink, log, loop.time() - began


async def test_a_call_that_finishes_within_the_drain_is_answered() -> None:
    sink, log, took = await _stop_while_running(SlowUpstream(delay_s=0.2), drain_s=5)
    assert (sink.status, sink.json["result"]["isError"]) == (200, False)
    [outcome] = log.of_kind("outcome")
    assert (outcome["result"]["error"], outcome["result"]["error_code"]) == (False, None)
    assert took < 4  # answered when the upstream did, not at the deadline


async def test_a_call_still_waiting_at_the_deadline_is_cut_with_shutting_down_and_recorded() -> None:
    sink, log, took = await _stop_while_running(SlowUpstream(delay_s=30), drain_s=0.3)
    assert sink.status == 503
    assert sink.json["error"]["code"] == -32603
    assert "drain_s" in sink.json["error"]["message"]
    assert 0.25 <= took < 5
    [decision] = log.of_kind("decision")
    [outcome] = log.of_kind("outcome")
    assert outcome["decision_id"] == decision["decision_id"]  # the cut call's own outcome
    assert (outcome["result"]["error"], outcome["result"]["error_code"]) == (True, "shutting_down")


async def test_an_sse_answer_in_progress_runs_to_its_end_within_the_drain() -> None:
    sink, log, _ = await _stop_while_running(SlowUpstream(sse=True, progress=4, gap_s=0.1), drain_s=5)
    messages = _sse_messages(sink)
    assert [m["params"]["progress"] for m in messages[:-1]] == [0, 1, 2, 3]
    assert messages[-1]["result"]["isError"] is False
    [outcome] = log.of_kind("outcome")
    assert outcome["result"]["error"] is False


async def test_an_sse_answer_unfinished_at_the_deadline_ends_with_the_error_for_its_request() -> None:
    sink, log, took = await _stop_while_running(SlowUpstream(sse=True, progress=100, gap_s=0.1), drain_s=0.35)
    messages = _sse_messages(sink)
    *progress, last = messages
    assert 1 <= len(progress) < 10  # relayed while the drain lasted, then cut
    assert last == {"jsonrpc": "2.0", "id": 7, "error": {"code": -32603, "message": Drain.error().message}}
    assert took < 5
    [outcome] = log.of_kind("outcome")
    assert (outcome["result"]["error"], outcome["result"]["error_code"]) == (True, "shutting_down")


async def test_an_answered_sse_stream_is_not_given_an_error_when_cut() -> None:
    """The answer went out; only a late notification is cut: no second response for the request."""
    answer = {"jsonrpc": "2.0", "id": 7, "result": {"content": [], "isError": False}}

    class AnswerThenLinger(SlowUpstream):
        async def run(self, exchange: Exchange) -> None:
            self.started.set()

            async def events() -> AsyncIterator[SseEvent]:
                yield SseEvent(message=answer)
                await asyncio.sleep(30)
                yield SseEvent(message={"jsonrpc": "2.0", "method": "notifications/message", "params": {}})

            exchange.reply = SseReply(200, events())

    sink, _, took = await _stop_while_running(AnswerThenLinger(), drain_s=0.2)
    assert _sse_messages(sink) == [answer]
    assert took < 5


async def test_the_deadline_cancels_what_is_in_flight_and_says_it_was_the_drain() -> None:
    drain = Drain(0.1)

    async def call() -> str:
        task = drain.enter()
        try:
            await asyncio.sleep(5)
            return "answered"
        except asyncio.CancelledError:
            return "cut" if drain.was_cut(task) else "cancelled"
        finally:
            drain.leave(task)

    calls = [asyncio.create_task(call()) for _ in range(3)]
    await asyncio.sleep(0)
    drain.begin()
    first = drain.deadline
    drain.begin()  # idempotent: the first deadline stands
    assert drain.deadline == first
    assert drain.closing.is_set()
    assert await asyncio.gather(*calls) == ["cut"] * 3
    other = asyncio.create_task(call())  # a cancellation that is not the drain's stays one
    await asyncio.sleep(0)
    other.cancel()
    assert await other == "cancelled"


async def test_closing_set_without_begin_leaves_no_time() -> None:
    drain = Drain(30)
    assert drain.left_s() is None
    drain.closing.set()
    assert drain.left_s() == 0.0


async def _retiring(delay_s: float, drain_s: float) -> tuple[Drain, McpEndpoint, asyncio.Task[Sink]]:
    """A route's endpoint on a branch of the gateway's drain (``drain_s``), with a call of ``delay_s`` running."""
    gateway, upstream = Drain(drain_s), SlowUpstream(delay_s=delay_s)
    endpoint = _endpoint(upstream, gateway.branch(), RecordingAuditLog())
    call = asyncio.create_task(_post(endpoint))
    await asyncio.wait_for(upstream.started.wait(), timeout=5)
    return gateway, endpoint, call


async def test_a_retired_endpoint_lets_its_call_finish_and_leaves_the_gateway_drain_alone() -> None:
    gateway, endpoint, call = await _retiring(delay_s=0.3, drain_s=5)
    assert not await endpoint.retire(0.05)  # still serving the call
    assert await endpoint.retire(5)  # idle once the call was answered
    sink = await call
    assert (sink.status, sink.json["result"]["isError"]) == (200, False)
    assert not gateway.closing.is_set()


async def test_a_retired_endpoint_cuts_its_call_at_its_own_deadline() -> None:
    gateway, endpoint, call = await _retiring(delay_s=30, drain_s=0.2)
    assert await endpoint.retire(5)
    assert (await call).status == 503  # cut: ShuttingDown
    assert gateway.deadline is None


async def test_the_gateway_drain_begins_its_branches_until_pruned() -> None:
    gateway = Drain(5)
    kept, pruned = gateway.branch(), gateway.branch()
    gateway.prune(pruned)
    gateway.begin()
    assert kept.closing.is_set()
    assert not pruned.closing.is_set()
    assert gateway.branch().closing.is_set()  # made after the stop began: begun

"""The volume filter in the runner: a tool result far above its tool's usual volume is flagged in
the outcome record, or withheld (a tool error in its place) on a ``withhold`` route, for JSON and
SSE replies alike; errors and other answers are not measured; a replay is checked, not learnt.

The runner, the inspector, the audit stage and the filter are the real ones; the upstream is a
forward stage answering with ``rows`` rows. The end-to-end counterpart (real processes, the SDK
client, a restart) is ``tests/e2e/test_result_volume.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from tests.support.audit_fakes import RecordingAuditLog

from bastion.audit.build import as_model
from bastion.config import HttpUpstream, RouteSettings
from bastion.config.routes import ToolSettings
from bastion.config.volume import VolumeSettings
from bastion.pipeline.context import Exchange, HttpRequest, JsonReply, SseEvent, SseReply
from bastion.pipeline.filters import MessageInspector
from bastion.pipeline.runner import Pipeline
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.volume import VOLUME_FLAG, VolumeFilter
from bastion.policy import Decision
from bastion.principal import Principal
from bastion.stores.sessions import SentRequest, Session
from bastion.transport.routes import RouteRuntime
from bastion.volume import VolumeBaselines

ALICE = Principal(kind="User", sub="alice", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0)
USUAL_ROWS, BIG_ROWS = 10, 1_000


def rows_result(count: int) -> dict[str, Any]:
    """A tool result of ``count`` rows, as text blocks and as ``structuredContent.rows``."""
    rows = [{"id": n, "name": f"customer-{n:05d}", "email": f"c{n}@example.com"} for n in range(count)]
    return {
        "content": [{"type": "text", "text": json.dumps(row)} for row in rows],
        "structuredContent": {"rows": rows},
        "isError": False,
    }


class Check:
    """The checks a call passes before forwarding, reduced to what the filter reads."""

    name = "check"

    async def run(self, exchange: Exchange) -> None:
        exchange.message = json.loads(exchange.http.body)
        exchange.kind, exchange.principal = "request", ALICE
        params = exchange.params
        exchange.action, exchange.target = exchange.method, params.get("name") or params.get("uri")
        exchange.decision = Decision("allow", ("p",))


class Upstream:
    """The forward stage: answers with ``answer(exchange)``, as JSON or as an SSE stream."""

    name = "forward"

    def __init__(self) -> None:
        self.sse = False
        self.answer: dict[str, Any] | None = None  # a whole message; else rows_result(arguments.rows)

    async def run(self, exchange: Exchange) -> None:
        message = self.answer or {
            "jsonrpc": "2.0",
            "id": exchange.rpc_id,
            "result": rows_result(exchange.params.get("arguments", {}).get("rows", 0)),
        }
        if not self.sse:
            exchange.reply = JsonReply(200, message)
            return
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}

        async def events() -> AsyncIterator[SseEvent]:
            yield SseEvent(message=progress)
            yield SseEvent(message=message, id="e2")

        exchange.reply = SseReply(200, events())


class Rig:
    def __init__(self, mode: str = "flag", tools: dict[str, ToolSettings] | None = None) -> None:
        settings = RouteSettings(
            name="db", http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True),
            result_volume=mode, tools=tools or {},  # type: ignore[arg-type]
        )  # fmt: skip
        self.route = RouteRuntime(settings=settings, resource_uri="http://gw.test/mcp/db", metadata_url="http://m")
        self.baselines = VolumeBaselines(VolumeSettings(min_samples=5))
        self.log = RecordingAuditLog()
        audit = AuditStage(self.log, policy_version="v")  # type: ignore[arg-type]
        self.filter = VolumeFilter(self.baselines, settings)
        self.inspector = MessageInspector([self.filter], on_drop=audit.record_dropped)
        self.upstream = Upstream()
        self.pipeline = Pipeline([Check()], audit=audit, forward=self.upstream, inspector=self.inspector)

    async def call(self, rows: int, tool: str = "rows", method: str = "tools/call") -> tuple[dict[str, Any], Exchange]:
        """One call through the runner: the message the client got, and the exchange (recorded)."""
        params = {"name": tool, "arguments": {"rows": rows}} if method == "tools/call" else {"uri": "db://x"}
        body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).encode()
        exchange = Exchange(route=self.route, http=HttpRequest("POST", "/mcp/db", {}, (), None, body))
        await self.pipeline.handle(exchange)
        reply = exchange.reply
        if isinstance(reply, SseReply):
            messages = [event.message async for event in reply.events]
            answer = messages[-1]
            assert messages[0]["method"] == "notifications/progress"  # the rest of the stream is relayed
        else:
            assert isinstance(reply, JsonReply)
            answer = reply.message
        await self.pipeline.finish(exchange)
        return answer, exchange

    def outcome(self) -> dict[str, Any]:
        body = self.log.of_kind("outcome")[-1]
        assert as_model(body).kind == "outcome"  # the record conforms to the schema
        return body

    async def learn(self, count: int = 5, tool: str = "rows") -> None:
        for _ in range(count):
            answer, _ = await self.call(USUAL_ROWS, tool)
            assert len(answer["result"]["content"]) == USUAL_ROWS
            assert "volume" not in self.outcome()["result"]  # usual results: no measures recorded


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_on_a_flag_route_the_result_is_relayed_and_its_outcome_flagged(sse: bool) -> None:
    rig = Rig("flag")
    rig.upstream.sse = sse
    await rig.learn()
    answer, exchange = await rig.call(BIG_ROWS)
    assert len(answer["result"]["structuredContent"]["rows"]) == BIG_ROWS
    result = rig.outcome()["result"]
    assert (result["error"], result["error_code"], result["flags"]) == (False, None, [VOLUME_FLAG])
    volume = result["volume"]
    encoded = orjson.dumps(rows_result(BIG_ROWS))
    assert (volume["bytes"], volume["blocks"], volume["items"]) == (len(encoded), BIG_ROWS, BIG_ROWS)
    assert volume["baseline"] == {"bytes": len(orjson.dumps(rows_result(USUAL_ROWS))), "blocks": 10, "items": 10}
    assert (volume["samples"], volume["anomalous"], volume["withheld"]) == (5, True, False)
    assert volume["exceeded"] == ["bytes", "blocks", "items"]
    assert volume["result_sha256"] == hashlib.sha256(encoded).hexdigest()
    assert exchange.error is None


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_on_a_withhold_route_the_client_gets_a_tool_error_instead(sse: bool) -> None:
    rig = Rig("withhold")
    rig.upstream.sse = sse
    await rig.learn()
    answer, exchange = await rig.call(BIG_ROWS)
    assert answer["id"] == 7
    result = answer["result"]
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert "withheld" in text
    assert "times the usual" in text
    assert exchange.decision_id in text
    assert "customer-" not in json.dumps(answer)  # none of the upstream's content
    error = result["structuredContent"]["error"]
    assert (error["reason"], error["cause"], error["measure"]) == ("result_withheld", "result_volume", "bytes")
    assert error["times"] >= 90
    outcome = rig.outcome()["result"]
    assert (outcome["error"], outcome["error_code"], outcome["flags"]) == (True, "result_withheld", [VOLUME_FLAG])
    assert outcome["volume"]["withheld"] is True
    assert outcome["volume"]["result_sha256"] == hashlib.sha256(orjson.dumps(rows_result(BIG_ROWS))).hexdigest()
    answer, _ = await rig.call(USUAL_ROWS)  # a usual result after it passes
    assert len(answer["result"]["content"]) == USUAL_ROWS


async def test_a_tool_setting_wins_over_the_routes() -> None:
    rig = Rig(
        "withhold", tools={"export": ToolSettings(result_volume="flag"), "dump": ToolSettings(result_volume="off")}
    )
    for tool in ("export", "dump"):
        await rig.learn(tool=tool)
    answer, _ = await rig.call(BIG_ROWS, "export")
    assert answer["result"]["isError"] is False
    assert rig.outcome()["result"]["flags"] == [VOLUME_FLAG]
    answer, _ = await rig.call(BIG_ROWS, "dump")
    assert rig.outcome()["result"]["flags"] == []
    assert rig.baselines.samples("db", "dump") == ()  # off: not even measured
    flag_route = Rig("flag", tools={"rows": ToolSettings(result_volume="withhold")})
    await flag_route.learn()
    assert (await flag_route.call(BIG_ROWS))[0]["result"]["isError"] is True


@pytest.mark.parametrize(
    "answer",
    [
        {"jsonrpc": "2.0", "id": 7, "error": {"code": -32603, "message": "x" * 200_000}},
        {"jsonrpc": "2.0", "id": 7, "result": {**rows_result(BIG_ROWS), "isError": True}},
        {
            "jsonrpc": "2.0",
            "id": 7,
            "result": {"resultType": "input_required", "inputRequests": {}, "requestState": "s"},
        },
    ],
    ids=["jsonrpc-error", "tool-error", "input-required"],
)
async def test_errors_and_answers_that_are_not_a_tools_output_are_not_measured(answer: dict[str, Any]) -> None:
    rig = Rig("withhold")
    await rig.learn()
    rig.upstream.answer = answer
    got, _ = await rig.call(BIG_ROWS)
    assert got == answer
    assert len(rig.baselines.samples("db", "rows")) == 5


async def test_other_methods_are_not_measured() -> None:
    rig = Rig("withhold")
    rig.upstream.answer = {"jsonrpc": "2.0", "id": 7, "result": {"contents": [{"uri": "db://x", "text": "x" * 10**6}]}}
    got, _ = await rig.call(0, method="resources/read")
    assert got["result"]["contents"][0]["text"] == "x" * 10**6
    assert len(rig.baselines) == 0


async def test_an_answer_replayed_on_a_get_stream_is_withheld_again_but_not_learnt_twice() -> None:
    rig = Rig("withhold")
    await rig.learn()
    stream = Exchange(route=rig.route, http=HttpRequest("GET", "/mcp/db", {}, (), None))
    stream.principal, stream.session = ALICE, Session(id="s1", route="db", principal_key="k")
    stream.session.requests.remember(SentRequest(41, "tools/call", "rows"))
    replay = {"jsonrpc": "2.0", "id": 41, "result": rows_result(BIG_ROWS)}

    async def events() -> AsyncIterator[SseEvent]:
        yield SseEvent(message=replay, id="e9")

    stream.reply = SseReply(200, events())
    rig.inspector.wrap(stream, "stream")
    assert isinstance(stream.reply, SseReply)
    relayed = [event.message async for event in stream.reply.events]
    assert relayed[0]["id"] == 41
    assert relayed[0]["result"]["isError"] is True
    assert "customer-" not in json.dumps(relayed)
    assert stream.notes["flags"] == [VOLUME_FLAG]
    assert stream.notes["volume"]["withheld"] is True
    assert stream.error is None  # the GET stream itself did not fail
    assert len(rig.baselines.samples("db", "rows")) == 5  # checked, not learnt

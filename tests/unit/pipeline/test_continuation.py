"""The continuation stage and filter: a requestState or task id is honoured only for the principal,
route and request it was issued to (MCP 2026-07-28 SEP-2322, tasks extension SEP-2663)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.exceptions import RedisError

from bastion.config import HttpUpstream, RouteSettings
from bastion.errors import (
    ContinuationsUnavailable,
    HeaderMismatch,
    MissingCapability,
    TransportError,
    UnknownContinuation,
)
from bastion.pipeline.context import Exchange, HttpRequest
from bastion.pipeline.filters import sent_request
from bastion.pipeline.stages.continuation import TASKS_EXTENSION, ContinuationFilter, ContinuationStage
from bastion.principal import Principal
from bastion.stores.memory_continuations import MemoryContinuationStore
from bastion.stores.redis_continuations import RedisContinuationStore
from bastion.stores.sessions import SentRequest
from bastion.transport.routes import RouteRuntime


def _principal(sub: str) -> Principal:
    return Principal(kind="User", sub=sub, issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0)


ALICE, BOB = _principal("alice"), _principal("bob")
TASKS_META = {"io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _route(name: str = "notes") -> RouteRuntime:
    route = RouteRuntime(
        settings=RouteSettings(name=name, http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True)),
        resource_uri=f"http://gw.test/mcp/{name}",
        metadata_url=f"http://gw.test/.well-known/oauth-protected-resource/mcp/{name}",
    )
    route.catalog_for(None).merge([{"name": "deploy", "annotations": {"destructiveHint": True}}], complete=True)
    return route


NOTES, BILLING = _route("notes"), _route("billing")


def _exchange(
    method: str, params: dict[str, Any], *, principal: Principal = ALICE, route: RouteRuntime = NOTES
) -> Exchange:
    message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    exchange = Exchange(route=route, http=HttpRequest("POST", "/mcp", {}, (), None, json.dumps(message).encode()))
    exchange.message, exchange.kind, exchange.principal = message, "request", principal
    exchange.era, exchange.protocol_version = "modern", "2026-07-28"
    if method in ("tools/call", "prompts/get"):
        exchange.action, exchange.target = method, params.get("name")
    return exchange


class Rig:
    def __init__(self) -> None:
        self.clock = Clock()
        self.store = MemoryContinuationStore()
        self.stage = ContinuationStage(self.store, clock=self.clock)
        self.filter = ContinuationFilter(self.store, clock=self.clock)

    async def answer(self, exchange: Exchange, result: dict[str, Any]) -> dict[str, Any] | None:
        """The upstream's answer to the exchange's own request, through the filter."""
        message = {"jsonrpc": "2.0", "id": exchange.rpc_id, "result": result}
        return await self.filter.apply(exchange, message, sent_request(exchange))

    async def issue_state(self, state: str = "s1", **kwargs: Any) -> Exchange:
        first = _exchange("tools/call", {"name": "deploy", "arguments": {"env": "prod"}}, **kwargs)
        await self.answer(first, {"resultType": "input_required", "inputRequests": {}, "requestState": state})
        return first

    async def issue_task(self, task_id: str = "t1", **kwargs: Any) -> Exchange:
        first = _exchange("tools/call", {"name": "deploy", "arguments": {"env": "prod"}}, **kwargs)
        await self.answer(first, {"resultType": "task", "taskId": task_id, "status": "working", "ttlMs": 60_000})
        return first


async def test_a_retry_with_the_state_issued_to_its_principal_is_linked_to_the_first_call() -> None:
    rig = Rig()
    first = await rig.issue_state()
    assert first.notes["flags"] == ["input_required"]
    retry = _exchange("tools/call", {"name": "deploy", "arguments": {}, "requestState": "s1", "inputResponses": {}})
    await rig.stage.run(retry)
    assert retry.notes["continues"] == first.decision_id
    assert (retry.action, retry.target) == ("tools/call", "deploy")  # still decided as a call
    assert "decide_arguments" not in retry.notes  # on its own arguments


async def test_a_chain_of_retries_keeps_linking_to_the_first_call() -> None:
    rig = Rig()
    first = await rig.issue_state("s1")
    second = _exchange("tools/call", {"name": "deploy", "requestState": "s1"})
    await rig.stage.run(second)
    await rig.answer(second, {"resultType": "input_required", "inputRequests": {}, "requestState": "s2"})
    third = _exchange("tools/call", {"name": "deploy", "requestState": "s2"})
    await rig.stage.run(third)
    assert third.notes["continues"] == first.decision_id


@pytest.mark.parametrize(
    ("who", "route", "params"),
    [
        (BOB, NOTES, {"name": "deploy", "requestState": "s1"}),  # another principal's state
        (ALICE, BILLING, {"name": "deploy", "requestState": "s1"}),  # issued on another route
        (ALICE, NOTES, {"name": "deploy", "requestState": "s1-TAMPERED"}),  # never issued
        (ALICE, NOTES, {"name": "read_logs", "requestState": "s1"}),  # issued for another tool
    ],
)
async def test_a_state_not_issued_for_this_request_is_refused(
    who: Principal, route: RouteRuntime, params: dict[str, Any]
) -> None:
    rig = Rig()
    await rig.issue_state("s1")
    retry = _exchange("tools/call", params, principal=who, route=route)
    with pytest.raises(UnknownContinuation) as caught:
        await rig.stage.run(retry)
    assert (caught.value.jsonrpc_code, caught.value.code) == (-32602, "unknown_continuation")
    assert "continues" not in retry.notes


async def test_a_state_issued_for_a_prompt_does_not_serve_a_tool_of_the_same_name() -> None:
    rig = Rig()
    prompt = _exchange("prompts/get", {"name": "deploy"})
    await rig.answer(prompt, {"resultType": "input_required", "inputRequests": {}, "requestState": "p1"})
    with pytest.raises(UnknownContinuation):
        await rig.stage.run(_exchange("tools/call", {"name": "deploy", "requestState": "p1"}))
    await rig.stage.run(_exchange("prompts/get", {"name": "deploy", "requestState": "p1"}))


async def test_a_state_expires() -> None:
    rig = Rig()
    await rig.issue_state("s1")
    rig.clock.now += 3601
    with pytest.raises(UnknownContinuation):
        await rig.stage.run(_exchange("tools/call", {"name": "deploy", "requestState": "s1"}))


@pytest.mark.parametrize("state", [None, 7, "", ["s1"]])
async def test_a_malformed_state_is_invalid_params(state: Any) -> None:
    with pytest.raises(TransportError) as caught:
        await Rig().stage.run(_exchange("tools/call", {"name": "deploy", "requestState": state}))
    assert caught.value.jsonrpc_code == -32602


async def test_a_task_request_is_decided_as_the_call_that_created_the_task() -> None:
    rig = Rig()
    first = await rig.issue_task("t1")
    assert first.notes["flags"] == ["task"]
    get = _exchange("tasks/get", {"taskId": "t1", "_meta": TASKS_META})
    await rig.stage.run(get)
    assert (get.action, get.target) == ("tools/call", "deploy")
    assert get.resource is not None
    assert get.resource.uid == {"type": "Tool", "id": "notes/deploy"}
    assert get.resource.attrs["risk"] == "destructive"
    assert get.notes["decide_arguments"] == {"env": "prod"}
    assert get.notes["continues"] == first.decision_id


@pytest.mark.parametrize("method", ["tasks/get", "tasks/update", "tasks/cancel"])
async def test_another_principals_task_is_unknown(method: str) -> None:
    rig = Rig()
    await rig.issue_task("t1")
    with pytest.raises(UnknownContinuation):
        await rig.stage.run(_exchange(method, {"taskId": "t1", "_meta": TASKS_META}, principal=BOB))


@pytest.mark.parametrize("meta", [None, {}, {"io.modelcontextprotocol/clientCapabilities": {"extensions": {}}}])
async def test_task_requests_need_the_tasks_extension_declared(meta: Any) -> None:
    rig = Rig()
    await rig.issue_task("t1")
    params: dict[str, Any] = {"taskId": "t1"} if meta is None else {"taskId": "t1", "_meta": meta}
    with pytest.raises(MissingCapability) as caught:
        await rig.stage.run(_exchange("tasks/get", params))
    assert caught.value.jsonrpc_code == -32021
    assert caught.value.data == {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}


async def test_a_task_lives_as_long_as_its_ttl_and_no_longer_than_a_day() -> None:
    rig = Rig()
    await rig.issue_task("t1")  # ttlMs 60 000
    rig.clock.now += 61
    with pytest.raises(UnknownContinuation):
        await rig.stage.run(_exchange("tasks/get", {"taskId": "t1", "_meta": TASKS_META}))
    first = _exchange("tools/call", {"name": "deploy"})
    await rig.answer(first, {"resultType": "task", "taskId": "t2", "ttlMs": 10**12})
    rig.clock.now += 86_401
    with pytest.raises(UnknownContinuation):
        await rig.stage.run(_exchange("tasks/get", {"taskId": "t2", "_meta": TASKS_META}))


async def test_the_filter_records_only_answers_to_the_exchanges_own_request() -> None:
    rig = Rig()
    exchange = _exchange("tools/call", {"name": "deploy"})
    other = SentRequest(99, "tools/call", "deploy")  # another request of the session (a replayed stream)
    replayed = {"jsonrpc": "2.0", "id": 99, "result": {"resultType": "input_required", "requestState": "s9"}}
    assert await rig.filter.apply(exchange, replayed, other) is replayed
    assert len(rig.store) == 0
    assert "flags" not in exchange.notes


async def test_the_filter_never_changes_or_drops_a_message() -> None:
    rig = Rig()
    exchange = _exchange("tools/call", {"name": "deploy"})
    result = {"resultType": "input_required", "inputRequests": {"q": {}}, "requestState": "s1"}
    message = {"jsonrpc": "2.0", "id": 1, "result": result}
    snapshot = json.dumps(message)
    assert await rig.filter.apply(exchange, message, sent_request(exchange)) is message
    assert json.dumps(message) == snapshot
    notification = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}
    assert await rig.filter.apply(exchange, notification, None) is notification


@pytest.mark.parametrize(
    ("header", "refused"), [("t1", False), (" t1 ", False), ("=?base64?dDE=?=", False), ("t2", True)]
)
async def test_a_task_requests_mcp_name_must_name_its_task(header: str, refused: bool) -> None:
    rig = Rig()
    await rig.issue_task("t1")
    get = _exchange("tasks/get", {"taskId": "t1", "_meta": TASKS_META})
    get.http = HttpRequest("POST", "/mcp", {"mcp-name": header}, (("mcp-name", header),), None, get.http.body)
    if refused:
        with pytest.raises(HeaderMismatch):
            await rig.stage.run(get)
        assert get.action != "tools/call"  # not classified as the task's call
        assert "continues" not in get.notes
    else:
        await rig.stage.run(get)
        assert get.action == "tools/call"


async def test_a_continuation_store_that_does_not_answer_refuses_rather_than_forwards() -> None:
    """A shared store (Redis) that cannot be reached: 503 ``continuations_unavailable``, never a
    request forwarded unchecked; recording an issued state raises, so its message is not relayed."""
    store = RedisContinuationStore("redis://127.0.0.1:1/0")
    try:
        retry = _exchange("tools/call", {"name": "deploy", "arguments": {}, "requestState": "s1"})
        with pytest.raises(ContinuationsUnavailable) as caught:
            await ContinuationStage(store).run(retry)
        assert (caught.value.status, caught.value.code) == (503, "continuations_unavailable")
        assert "continues" not in retry.notes
        first = _exchange("tools/call", {"name": "deploy", "arguments": {"env": "prod"}})
        message = {"jsonrpc": "2.0", "id": first.rpc_id, "result": {"resultType": "task", "taskId": "t1"}}
        with pytest.raises(RedisError):  # the filter fails: the message is not relayed
            await ContinuationFilter(store).apply(first, message, sent_request(first))
    finally:
        await store.close()

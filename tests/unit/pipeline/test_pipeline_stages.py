"""Tests of the pipeline stages with the real demo policy (src/bastion/demo/demo.cedar).

classify -> authorize -> inspect: action/target/resource per method, completion refs, unknown
methods denied, list filtering per principal (``nextCursor`` kept). Plus the sans-IO
transport, session and authenticate stages.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import bastion
from bastion.config import HttpUpstream, RouteSettings
from bastion.errors import (
    AnswerWithheld,
    AuthenticationError,
    BastionError,
    ForbiddenOrigin,
    InsufficientScope,
    MethodNotFound,
    NotAcceptable,
    PolicyDenied,
    SessionNotFound,
    SessionRequired,
    SessionsUnavailable,
    TransportError,
    UnsupportedMediaType,
)
from bastion.pipeline.context import Exchange, HttpRequest, JsonReply, SseEvent, SseReply
from bastion.pipeline.filters import MessageInspector
from bastion.pipeline.runner import error_reply
from bastion.pipeline.stages.authenticate import AuthenticateStage, bearer_token
from bastion.pipeline.stages.authorize import SESSION_DECISION, AuthorizeStage, policy_context
from bastion.pipeline.stages.classify import SESSION_METHODS, ClassifyStage
from bastion.pipeline.stages.inspect import ListFilter
from bastion.pipeline.stages.session import SessionStage
from bastion.pipeline.stages.transport import TransportStage
from bastion.policy import PolicyEngine, ResourceRef
from bastion.principal import Principal
from bastion.stores.memory_sessions import MemorySessionStore
from bastion.stores.redis_sessions import RedisSessionStore
from bastion.transport.checks import OriginPolicy
from bastion.transport.routes import RouteRuntime

DEMO_POLICY = Path(bastion.__file__).parent / "demo" / "demo.cedar"

NOTES_TOOLS: list[dict[str, Any]] = [
    {"name": "read_logs", "annotations": {"readOnlyHint": True}},
    {"name": "search_notes", "annotations": {"readOnlyHint": True}},
    {"name": "add_note", "annotations": {"readOnlyHint": False, "destructiveHint": False}},
    {"name": "delete_note", "annotations": {"readOnlyHint": False, "destructiveHint": True}},
]
TIME_TOOLS: list[dict[str, Any]] = [
    {"name": "get_current_time", "annotations": {"readOnlyHint": True}},
    {"name": "convert_time", "annotations": {"readOnlyHint": True}},
]


def _principal(sub: str, *groups: str) -> Principal:
    return Principal(
        kind="User", sub=sub, issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0, groups=groups
    )


ENGINEER = _principal("erin", "engineering")
SUPPORT = _principal("sam", "support")
NOBODY = _principal("nora")


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.load([DEMO_POLICY])


def _route(name: str = "notes", tools: list[dict[str, Any]] | None = None) -> RouteRuntime:
    route = RouteRuntime(
        settings=RouteSettings(
            name=name, http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True), trust_annotations=True
        ),
        resource_uri=f"http://gw.test/mcp/{name}",
        metadata_url=f"http://gw.test/.well-known/oauth-protected-resource/mcp/{name}",
    )
    if tools is not None:
        route.catalog_for(None).merge(tools, complete=True)
    return route


def _exchange(
    method: str | None = "tools/call",
    params: dict[str, Any] | None = None,
    *,
    route: RouteRuntime | None = None,
    principal: Principal | None = SUPPORT,
    rpc_id: Any = 1,
    era: str = "handshake",
) -> Exchange:
    message: dict[str, Any] = {"jsonrpc": "2.0"}
    if rpc_id is not None:
        message["id"] = rpc_id
    if method is not None:
        message["method"] = method
    else:
        message["result"] = {}
    if params is not None:
        message["params"] = params
    request = HttpRequest("POST", "/mcp/notes", {}, (), "127.0.0.1", json.dumps(message).encode())
    exchange = Exchange(route=route or _route(tools=NOTES_TOOLS), http=request)
    exchange.message = message
    exchange.kind = "response" if method is None else ("request" if rpc_id is not None else "notification")
    exchange.principal = principal
    exchange.era = era  # type: ignore[assignment]
    return exchange


class CatalogLoader:
    """A fake ``load_catalog`` that fills the route catalog with ``tools`` and counts its calls."""

    def __init__(self, tools: list[dict[str, Any]] | None = None) -> None:
        self.tools = tools or []
        self.calls = 0

    async def __call__(self, exchange: Exchange) -> None:
        self.calls += 1
        exchange.route.catalog_for(exchange.principal).merge(self.tools, complete=True)


async def _classify(exchange: Exchange, loader: CatalogLoader | None = None) -> Exchange:
    await ClassifyStage(loader or CatalogLoader()).run(exchange)
    return exchange


# --- classify --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "risk"), [("read_logs", "read"), ("add_note", "write"), ("delete_note", "destructive")]
)
async def test_tools_call_of_a_catalogued_tool(tool: str, risk: str) -> None:
    loader = CatalogLoader()
    exchange = await _classify(_exchange("tools/call", {"name": tool, "arguments": {}}), loader)
    assert (exchange.action, exchange.target) == ("tools/call", tool)
    assert exchange.resource is not None
    assert exchange.resource.uid == {"type": "Tool", "id": f"notes/{tool}"}
    assert exchange.resource.attrs["risk"] == risk
    assert loader.calls == 0


async def test_tools_call_of_an_unknown_tool_loads_the_catalog_first() -> None:
    loader = CatalogLoader([{"name": "fresh", "annotations": {"readOnlyHint": True}}])
    exchange = await _classify(_exchange("tools/call", {"name": "fresh"}, route=_route()), loader)
    assert loader.calls == 1
    assert exchange.resource is not None
    assert exchange.resource.attrs["risk"] == "read"


async def test_a_tool_the_upstream_does_not_list_is_classified_destructive() -> None:
    loader = CatalogLoader(NOTES_TOOLS)
    exchange = await _classify(_exchange("tools/call", {"name": "ghost"}), loader)
    assert loader.calls == 1
    assert exchange.target == "ghost"
    assert exchange.resource is not None
    assert exchange.resource.attrs["risk"] == "destructive"


async def test_a_long_name_the_upstream_does_not_list_is_refused_without_echoing_it() -> None:
    name = "x" * 10_000
    with pytest.raises(TransportError) as caught:
        await _classify(_exchange("tools/call", {"name": name}), CatalogLoader(NOTES_TOOLS))
    assert caught.value.jsonrpc_code == -32602
    assert len(caught.value.message) < 200


async def test_a_long_name_the_upstream_lists_is_classified() -> None:
    name = "y" * 200
    exchange = await _classify(_exchange("tools/call", {"name": name}), CatalogLoader([{"name": name}]))
    assert exchange.target == name


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/call", {}),
        ("tools/call", {"name": ""}),
        ("tools/call", {"name": 5}),
        ("tools/call", {"name": None}),
        ("tools/call", {"name": ["read_logs"]}),
        ("resources/read", {}),
        ("resources/read", {"uri": 1}),
        ("resources/subscribe", {"uri": ""}),
        ("prompts/get", {"name": {}}),
        ("completion/complete", {}),
        ("completion/complete", {"ref": "ref/prompt"}),
        ("completion/complete", {"ref": {"type": "ref/tool", "name": "x"}}),
        ("completion/complete", {"ref": {"type": "ref/prompt"}}),
        ("completion/complete", {"ref": {"type": "ref/resource", "uri": 3}}),
        ("tools/call", None),
    ],
)
async def test_malformed_params_are_invalid_params(method: str, params: dict[str, Any] | None) -> None:
    with pytest.raises(TransportError) as caught:
        await _classify(_exchange(method, params))
    assert caught.value.jsonrpc_code == -32602
    assert caught.value.status == 400


@pytest.mark.parametrize("method", ["resources/read", "resources/subscribe", "resources/unsubscribe"])
async def test_resource_methods_read_the_resource(method: str) -> None:
    exchange = await _classify(_exchange(method, {"uri": "file:///notes/runbook"}))
    assert (exchange.action, exchange.target) == ("resources/read", "file:///notes/runbook")
    assert exchange.resource == ResourceRef(
        kind="Resource", route="notes", name="file:///notes/runbook", attrs={"uri": "file:///notes/runbook"}
    )


async def test_prompts_get_is_a_prompt() -> None:
    exchange = await _classify(_exchange("prompts/get", {"name": "summarize"}))
    assert (exchange.action, exchange.target) == ("prompts/get", "summarize")
    assert exchange.resource is not None
    assert exchange.resource.uid == {"type": "Prompt", "id": "notes/summarize"}


async def test_completion_of_a_prompt_reads_the_prompt() -> None:
    params = {"ref": {"type": "ref/prompt", "name": "summarize"}, "argument": {"name": "a", "value": "b"}}
    exchange = await _classify(_exchange("completion/complete", params))
    assert (exchange.action, exchange.target) == ("prompts/get", "summarize")
    assert exchange.resource is not None
    assert exchange.resource.kind == "Prompt"


async def test_completion_of_a_resource_reads_the_resource() -> None:
    params = {"ref": {"type": "ref/resource", "uri": "notes://{id}"}, "argument": {"name": "id", "value": "1"}}
    exchange = await _classify(_exchange("completion/complete", params))
    assert (exchange.action, exchange.target) == ("resources/read", "notes://{id}")
    assert exchange.resource is not None
    assert exchange.resource.uid == {"type": "Resource", "id": "notes/notes://{id}"}


@pytest.mark.parametrize("method", sorted(SESSION_METHODS))
async def test_session_methods_need_no_cedar_action(method: str) -> None:
    exchange = await _classify(_exchange(method, {}))
    assert (exchange.action, exchange.target, exchange.resource) == (None, None, None)


UNKNOWN_METHODS = ["sampling/createMessage", "elicitation/create", "foo/bar", "tools/delete", "x", "tasks/get"]


@pytest.mark.parametrize("method", UNKNOWN_METHODS)
async def test_requests_for_unknown_methods_are_method_not_found(method: str) -> None:
    exchange = _exchange(method, {})
    with pytest.raises(MethodNotFound) as caught:
        await _classify(exchange)
    assert (caught.value.jsonrpc_code, caught.value.status) == (-32601, 200)  # 200: a 404 ends a 2025 session
    assert (exchange.action, exchange.target, exchange.resource) == (None, method, None)
    # On 2026-07-28 the same refusal is a 404 (basic/transports).
    assert error_reply(_modern(method), caught.value).status == 404


@pytest.mark.parametrize(
    "method", ["initialize", "ping", "logging/setLevel", "resources/subscribe", "tasks/result", "tasks/list"]
)
async def test_methods_2026_07_28_removed_are_method_not_found_there_only(method: str) -> None:
    with pytest.raises(MethodNotFound):
        await _classify(_modern(method, {"uri": "notes://1", "taskId": "t"}))
    if not method.startswith("tasks/"):
        await _classify(_exchange(method, {"uri": "notes://1", "level": "info"}))  # still known to 2025 clients


@pytest.mark.parametrize("method", ["tasks/get", "tasks/update", "tasks/cancel"])
async def test_task_requests_keep_their_method_as_action_until_the_continuation_stage(method: str) -> None:
    exchange = await _classify(_modern(method, {"taskId": "t"}))
    assert (exchange.action, exchange.resource) == (method, None)  # denied by authorize if nothing links them


@pytest.mark.parametrize("method", UNKNOWN_METHODS)
async def test_unknown_notifications_carry_their_name_as_action_and_no_resource(method: str) -> None:
    exchange = await _classify(_exchange(method, {}, rpc_id=None))
    assert (exchange.action, exchange.target, exchange.resource) == (method, None, None)


def _modern(method: str, params: dict[str, Any] | None = None) -> Exchange:
    exchange = _exchange(method, params or {}, era="modern")
    exchange.protocol_version = "2026-07-28"
    return exchange


async def test_responses_are_not_classified() -> None:
    exchange = await _classify(_exchange(None))
    assert exchange.action is None


# --- authorize with the demo policy ----------------------------------------------------------


async def _decide(engine: PolicyEngine, exchange: Exchange) -> Exchange:
    await ClassifyStage(CatalogLoader()).run(exchange)
    await AuthorizeStage(engine).run(exchange)
    return exchange


@pytest.mark.parametrize("tool", ["read_logs", "search_notes", "add_note", "delete_note"])
async def test_engineering_may_call_every_tool(engine: PolicyEngine, tool: str) -> None:
    exchange = await _decide(engine, _exchange("tools/call", {"name": tool}, principal=ENGINEER))
    assert exchange.decision is not None
    assert exchange.decision.allowed
    assert exchange.decision.policy_ids == ("engineering-all-tools",)


async def test_support_never_runs_a_destructive_tool(engine: PolicyEngine) -> None:
    with pytest.raises(PolicyDenied) as caught:
        await _decide(engine, _exchange("tools/call", {"name": "delete_note"}))
    assert caught.value.data == {"policies": ["support-no-destructive"]}
    assert caught.value.message == "Denied by policy support-no-destructive"
    assert caught.value.status == 200


@pytest.mark.parametrize(("env", "allowed"), [("dev", True), ("prod", False), (None, False)])
async def test_support_reads_only_dev_logs(engine: PolicyEngine, env: str | None, allowed: bool) -> None:
    arguments = {} if env is None else {"env": env}
    exchange = _exchange("tools/call", {"name": "read_logs", "arguments": arguments})
    if allowed:
        await _decide(engine, exchange)
        assert exchange.decision is not None
        assert exchange.decision.policy_ids == ("support-read-logs",)
    else:
        with pytest.raises(PolicyDenied) as caught:
            await _decide(engine, exchange)
        assert caught.value.data == {"policies": ["support-logs-dev-only"]}


async def test_support_may_ask_the_time(engine: PolicyEngine) -> None:
    route = _route("time", TIME_TOOLS)
    exchange = await _decide(engine, _exchange("tools/call", {"name": "get_current_time"}, route=route))
    assert exchange.decision is not None
    assert exchange.decision.policy_ids == ("support-time",)


async def test_a_principal_without_groups_is_denied_by_default(engine: PolicyEngine) -> None:
    with pytest.raises(PolicyDenied) as caught:
        await _decide(engine, _exchange("tools/call", {"name": "search_notes"}, principal=NOBODY))
    assert caught.value.data == {"policies": []}
    assert "no policy permits" in caught.value.message


async def test_resources_and_prompts_have_no_permit_in_the_demo(engine: PolicyEngine) -> None:
    for method, params in (("resources/read", {"uri": "file:///x"}), ("prompts/get", {"name": "p"})):
        with pytest.raises(PolicyDenied):
            await _decide(engine, _exchange(method, params, principal=ENGINEER))


@pytest.mark.parametrize("method", ["foo/bar", "sampling/createMessage", "tools/delete"])
async def test_an_unknown_notification_is_denied_by_authorize(engine: PolicyEngine, method: str) -> None:
    exchange = _exchange(method, {}, principal=ENGINEER, rpc_id=None)
    with pytest.raises(PolicyDenied) as caught:
        await _decide(engine, exchange)
    assert caught.value.data == {"policies": []}
    assert method in caught.value.message
    assert exchange.decision is not None
    assert not exchange.decision.allowed


async def test_session_methods_get_the_built_in_decision(engine: PolicyEngine) -> None:
    exchange = await _decide(engine, _exchange("tools/list", {}, principal=NOBODY))
    assert exchange.decision is SESSION_DECISION


def test_policy_context_shape() -> None:
    exchange = _exchange("tools/call", {"name": "x"})
    context = policy_context(exchange, ["not", "a", "dict"])
    assert context["arguments"] == {}
    assert context["ip"] == "127.0.0.1"
    assert context["approved"] is False
    assert context["session_labels"] == []
    # records and bulk only for a tool that declares record_arguments
    assert set(context) == {"arguments", "scopes", "client_id", "session", "time", "ip", "approved", "session_labels"}


STEP_UP_POLICY = """
@id("engineering-all-tools")
permit (principal in Group::"engineering", action == Action::"tools/call", resource);

@id("delete-needs-scope")
@scope("notes:write")
forbid (principal, action == Action::"tools/call", resource == Tool::"notes/delete_note")
unless { context.scopes.contains("notes:write") };
"""


@pytest.fixture(scope="module")
def step_up_engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    path = tmp_path_factory.mktemp("step-up") / "step_up.cedar"
    path.write_text(STEP_UP_POLICY, encoding="utf-8")
    return PolicyEngine.load([path])


async def test_a_scope_annotated_forbid_asks_for_that_scope(step_up_engine: PolicyEngine) -> None:
    engineer = dataclasses.replace(ENGINEER, scopes=("mcp",))
    with pytest.raises(InsufficientScope) as caught:
        await _decide(step_up_engine, _exchange("tools/call", {"name": "delete_note"}, principal=engineer))
    assert caught.value.status == 403
    assert caught.value.scope == "mcp notes:write"
    assert caught.value.data == {"policies": ["delete-needs-scope"]}
    reply = error_reply(_exchange("tools/call", {"name": "delete_note"}, principal=engineer), caught.value)
    assert reply.status == 403
    assert reply.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="mcp notes:write", '
        'resource_metadata="http://gw.test/.well-known/oauth-protected-resource/mcp/notes"'
    )


async def test_the_stepped_up_token_is_allowed(step_up_engine: PolicyEngine) -> None:
    engineer = dataclasses.replace(ENGINEER, scopes=("mcp", "notes:write"))
    exchange = await _decide(step_up_engine, _exchange("tools/call", {"name": "delete_note"}, principal=engineer))
    assert exchange.decision is not None
    assert exchange.decision.allowed


# --- inspect: list filtering -----------------------------------------------------------------


def _list_reply(key: str, items: list[dict[str, Any]], *, rpc_id: Any = 1, cursor: str | None = "page-2") -> JsonReply:
    result: dict[str, Any] = {key: items}
    if cursor is not None:
        result["nextCursor"] = cursor
    return JsonReply(200, {"jsonrpc": "2.0", "id": rpc_id, "result": result}, raw=b"stale")


async def _inspect(engine: PolicyEngine, exchange: Exchange) -> list[tuple[Any, str]]:
    """Run the list filter on ``exchange.reply`` as the runner does; return the drops reported."""
    dropped: list[tuple[Any, str]] = []

    async def on_drop(_: Exchange, message: Any, reason: str) -> None:
        dropped.append((message, reason))

    inspector = MessageInspector([ListFilter(engine)], on_drop=on_drop)
    await inspector.inspect_reply(exchange)
    inspector.wrap(exchange, "reply")
    return dropped


def _names(reply: Any, key: str = "tools") -> list[str]:
    assert isinstance(reply, JsonReply)
    return [item["name"] for item in reply.message["result"][key]]


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        (ENGINEER, ["read_logs", "search_notes", "add_note", "delete_note"]),
        (SUPPORT, ["read_logs", "search_notes"]),
        (NOBODY, []),
    ],
)
async def test_tools_list_is_filtered_per_principal(
    engine: PolicyEngine, principal: Principal, expected: list[str]
) -> None:
    exchange = _exchange("tools/list", {}, principal=principal, route=_route())
    exchange.reply = _list_reply("tools", NOTES_TOOLS)
    await _inspect(engine, exchange)
    assert _names(exchange.reply) == expected
    assert isinstance(exchange.reply, JsonReply)
    assert exchange.reply.message["result"]["nextCursor"] == "page-2"
    assert exchange.reply.raw is None  # the filtered message is re-encoded, never the upstream bytes
    assert exchange.notes["listed"] == 4
    assert exchange.notes["filtered_out"] == 4 - len(expected)
    assert "cacheScope" not in exchange.reply.message["result"]


async def test_the_tool_list_refreshes_the_catalog(engine: PolicyEngine) -> None:
    route = _route()
    exchange = _exchange("tools/list", {}, route=route)
    exchange.reply = _list_reply("tools", NOTES_TOOLS, cursor=None)
    await _inspect(engine, exchange)
    assert set(route.catalog_for(None).tools) == {t["name"] for t in NOTES_TOOLS}
    later = _exchange("tools/list", {"cursor": "page-2"}, route=route)
    later.reply = _list_reply("tools", [{"name": "extra", "annotations": {"readOnlyHint": True}}], cursor=None)
    await _inspect(engine, later)
    assert "read_logs" in route.catalog_for(None).tools
    assert "extra" in route.catalog_for(None).tools


async def test_a_modern_filtered_list_is_private(engine: PolicyEngine) -> None:
    exchange = _exchange("tools/list", {}, era="modern")
    exchange.reply = _list_reply("tools", NOTES_TOOLS)
    await _inspect(engine, exchange)
    assert isinstance(exchange.reply, JsonReply)
    assert exchange.reply.message["result"]["cacheScope"] == "private"


@pytest.mark.parametrize(
    ("method", "key", "items"),
    [
        ("resources/list", "resources", [{"uri": "file:///a", "name": "a"}]),
        ("prompts/list", "prompts", [{"name": "summarize"}]),
    ],
)
async def test_resources_and_prompts_are_filtered_too(
    engine: PolicyEngine, method: str, key: str, items: list[dict[str, Any]]
) -> None:
    exchange = _exchange(method, {}, principal=ENGINEER)
    exchange.reply = _list_reply(key, items)
    await _inspect(engine, exchange)
    assert isinstance(exchange.reply, JsonReply)
    assert exchange.reply.message["result"][key] == []
    assert exchange.reply.message["result"]["nextCursor"] == "page-2"


async def test_non_object_items_are_dropped(engine: PolicyEngine) -> None:
    exchange = _exchange("tools/list", {}, principal=ENGINEER)
    exchange.reply = _list_reply("tools", [*NOTES_TOOLS[:1], "junk", 3, None])  # type: ignore[list-item]
    await _inspect(engine, exchange)
    assert _names(exchange.reply) == ["read_logs"]


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "x"}},
        {"jsonrpc": "2.0", "id": 1, "result": []},
    ],
    ids=["error", "result-not-an-object"],
)
async def test_messages_that_do_not_answer_the_list_pass_unchanged(
    engine: PolicyEngine, message: dict[str, Any]
) -> None:
    exchange = _exchange("tools/list", {})
    exchange.reply = JsonReply(200, json.loads(json.dumps(message)))
    await _inspect(engine, exchange)
    assert isinstance(exchange.reply, JsonReply)
    assert exchange.reply.message == message


async def test_a_list_that_is_not_a_list_is_emptied(engine: PolicyEngine) -> None:
    """Deny by construction: what cannot be filtered item by item is not relayed."""
    exchange = _exchange("tools/list", {}, principal=ENGINEER)
    exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": 1, "result": {"tools": {"read_logs": NOTES_TOOLS[0]}}})
    await _inspect(engine, exchange)
    assert _names(exchange.reply) == []


async def test_a_reply_with_another_id_is_refused_and_reported(engine: PolicyEngine) -> None:
    """An upstream answering a list request with another request's id never gets the list through."""
    exchange = _exchange("tools/list", {}, principal=ENGINEER)
    exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": 99, "result": {"tools": NOTES_TOOLS}})
    dropped: list[str] = []

    async def on_drop(_: Exchange, message: Any, reason: str) -> None:
        dropped.append(reason)

    with pytest.raises(AnswerWithheld, match="does not answer this request") as caught:
        await MessageInspector([ListFilter(engine)], on_drop=on_drop).inspect_reply(exchange)
    assert dropped == ["unsolicited_response"]
    assert (caught.value.status, caught.value.jsonrpc_code, caught.value.code) == (500, -32603, "answer_withheld")


class _Withholding:
    """A message filter that drops every message (as a redaction or pinning filter may)."""

    name = "withhold"

    async def apply(self, exchange: Exchange, message: dict[str, Any], answered: Any) -> dict[str, Any] | None:
        return None


async def test_an_answer_a_filter_withholds_is_answer_withheld_not_internal_error() -> None:
    """The client's own answer dropped by a filter is an expected refusal with its own audit code;
    the drop itself is reported as ``filtered:<name>``."""
    exchange = _exchange("tools/call", {"name": "read_logs"}, principal=ENGINEER)
    exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": 1, "result": {"content": []}})
    dropped: list[str] = []

    async def on_drop(_: Exchange, message: Any, reason: str) -> None:
        dropped.append(reason)

    with pytest.raises(AnswerWithheld, match=r"the answer was withheld \(withhold\)") as caught:
        await MessageInspector([_Withholding()], on_drop=on_drop).inspect_reply(exchange)
    assert dropped == ["filtered:withhold"]
    assert caught.value.code == "answer_withheld"


async def test_non_list_methods_are_untouched(engine: PolicyEngine) -> None:
    exchange = _exchange("tools/call", {"name": "read_logs"})
    reply = JsonReply(200, {"jsonrpc": "2.0", "id": 1, "result": {"tools": NOTES_TOOLS}}, raw=b"raw")
    exchange.reply = reply
    await _inspect(engine, exchange)
    assert exchange.reply is reply
    assert reply.raw == b"raw"


async def test_sse_list_results_are_filtered_event_by_event(engine: PolicyEngine) -> None:
    async def events() -> AsyncIterator[SseEvent]:
        yield SseEvent(message={"jsonrpc": "2.0", "method": "notifications/message", "params": {}})
        yield SseEvent(data="not json", id="e1")
        yield SseEvent(message={"jsonrpc": "2.0", "id": 1, "result": {"tools": NOTES_TOOLS, "nextCursor": "c"}})

    exchange = _exchange("tools/list", {})
    exchange.reply = SseReply(200, events())
    await _inspect(engine, exchange)
    assert isinstance(exchange.reply, SseReply)
    seen = [event async for event in exchange.reply.events]
    assert seen[0].message["method"] == "notifications/message"
    assert seen[1].data == "not json"
    assert [t["name"] for t in seen[2].message["result"]["tools"]] == ["read_logs", "search_notes"]
    assert seen[2].message["result"]["nextCursor"] == "c"


# --- transport stage -------------------------------------------------------------------------


def _post(body: Any, **headers: str) -> Exchange:
    raw_body = body if isinstance(body, bytes) else json.dumps(body).encode()
    merged = {"host": "127.0.0.1:8080", "content-type": "application/json", **headers}
    request = HttpRequest("POST", "/mcp/notes", merged, tuple(merged.items()), "127.0.0.1", raw_body)
    return Exchange(route=_route(), http=request)


@pytest.fixture
def transport() -> TransportStage:
    return TransportStage(OriginPolicy.for_listener("http://127.0.0.1:8080", 8080))


PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "", "application/jsonx", "multipart/form-data", "application/x-www-form-urlencoded"]
)
async def test_transport_refuses_other_media_types(transport: TransportStage, content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        await transport.run(_post(PING, **{"content-type": content_type}))


async def test_transport_accepts_json_with_parameters(transport: TransportStage) -> None:
    exchange = _post(PING, **{"content-type": "Application/JSON; charset=utf-8"})
    await transport.run(exchange)
    assert exchange.kind == "request"
    assert exchange.accepts_sse is True


async def test_transport_refuses_an_accept_without_json_or_sse(transport: TransportStage) -> None:
    with pytest.raises(NotAcceptable):
        await transport.run(_post(PING, accept="text/html"))


async def test_transport_notes_whether_sse_is_accepted(transport: TransportStage) -> None:
    exchange = _post(PING, accept="application/json")
    await transport.run(exchange)
    assert exchange.accepts_sse is False


async def test_transport_checks_the_origin_first(transport: TransportStage) -> None:
    with pytest.raises(ForbiddenOrigin):
        await transport.run(_post(b"garbage", origin="http://evil.example", **{"content-type": "text/plain"}))


async def test_a_modern_notification_goes_on_to_authentication(transport: TransportStage) -> None:
    exchange = _post({"jsonrpc": "2.0", "method": "notifications/cancelled"}, **{"mcp-protocol-version": "2026-07-28"})
    await transport.run(exchange)
    assert exchange.reply is None  # not answered before the token is checked
    assert exchange.kind == "notification"
    assert exchange.era == "modern"


async def test_a_modern_request_runs_the_envelope_ladder(transport: TransportStage) -> None:
    exchange = _post({**PING, "params": {}}, **{"mcp-protocol-version": "2026-07-28", "mcp-method": "ping"})
    with pytest.raises(TransportError) as caught:
        await transport.run(exchange)
    assert caught.value.jsonrpc_code == -32602


# --- session stage ---------------------------------------------------------------------------


async def test_initialize_opens_a_session_bound_to_the_principal() -> None:
    store = MemorySessionStore()
    exchange = _exchange("initialize", {})
    await SessionStage(store).run(exchange)
    assert exchange.new_session
    assert exchange.session is not None
    found = await store.get(exchange.session.id, "notes", SUPPORT.key)
    assert found is not None
    assert found.id == exchange.session.id


async def test_other_handshake_messages_need_the_session_header() -> None:
    with pytest.raises(SessionRequired):
        await SessionStage(MemorySessionStore()).run(_exchange("tools/list", {}))


async def test_a_session_of_another_principal_is_not_found() -> None:
    store = MemorySessionStore()
    session = await store.create("notes", ENGINEER.key)
    exchange = _exchange("tools/list", {})
    exchange.http = HttpRequest("POST", "/mcp/notes", {"mcp-session-id": session.id}, (), None, b"")
    with pytest.raises(SessionNotFound) as caught:
        await SessionStage(store).run(exchange)
    assert caught.value.status == 404


async def test_a_session_opened_before_its_route_changed_is_ended() -> None:
    store = MemorySessionStore()
    old = await store.create("notes", SUPPORT.key)
    stage = SessionStage(store, opened_after=old.created + 1)
    exchange = _exchange("tools/list", {})
    exchange.http = HttpRequest("POST", "/mcp/notes", {"mcp-session-id": old.id}, (), None, b"")
    with pytest.raises(SessionNotFound):
        await stage.run(exchange)
    assert await store.get(old.id, "notes", SUPPORT.key) is None  # forgotten, not only refused
    fresh = _exchange("initialize", {})
    await stage.run(fresh)  # a new session on the changed route
    assert fresh.session is not None
    exchange.http = HttpRequest("POST", "/mcp/notes", {"mcp-session-id": fresh.session.id}, (), None, b"")
    await SessionStage(store, opened_after=fresh.session.created).run(exchange)
    assert exchange.session is not None
    assert exchange.session.id == fresh.session.id


async def test_a_session_store_that_does_not_answer_refuses_the_message() -> None:
    """A shared store (Redis) that cannot be reached: 503 ``sessions_unavailable``, never a message
    handled without its session. A real RedisSessionStore on a port nothing listens on."""
    store = RedisSessionStore("redis://127.0.0.1:1/0")
    try:
        for method, headers in (("initialize", {}), ("tools/list", {"mcp-session-id": "s" * 43})):
            exchange = _exchange(method, {})
            exchange.http = HttpRequest("POST", "/mcp/notes", headers, (), None, b"")
            with pytest.raises(SessionsUnavailable) as caught:
                await SessionStage(store).run(exchange)
            assert (caught.value.status, caught.value.code) == (503, "sessions_unavailable")
            assert exchange.session is None
    finally:
        await store.close()


async def test_modern_requests_have_no_session() -> None:
    exchange = _exchange("tools/list", {}, era="modern")
    await SessionStage(MemorySessionStore()).run(exchange)
    assert exchange.session is None


async def test_the_session_stage_refuses_to_run_without_a_principal() -> None:
    with pytest.raises(BastionError):
        await SessionStage(MemorySessionStore()).run(_exchange("tools/list", {}, principal=None))


# --- authenticate stage ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER  abc ", "abc"), ("  Bearer x.y.z", "x.y.z")],
)
def test_bearer_token_parsing(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpw", "Bearer", "Bearer ", "Bearer a b", "Token abc"])
def test_anything_but_one_bearer_token_is_a_missing_token(header: str | None) -> None:
    with pytest.raises(AuthenticationError) as caught:
        bearer_token(header)
    assert caught.value.reason == "missing_token"


async def test_authenticate_asks_for_the_routes_audience() -> None:
    seen: list[tuple[str, str]] = []

    class Verifier:
        async def authenticate(self, token: str, audience: str) -> Principal:
            seen.append((token, audience))
            return SUPPORT

    exchange = _exchange("tools/list", {}, principal=None)
    exchange.http = HttpRequest("POST", "/mcp/notes", {"authorization": "Bearer t0k"}, (), None, b"")
    await AuthenticateStage(Verifier()).run(exchange)
    assert seen == [("t0k", "http://gw.test/mcp/notes")]
    assert exchange.principal is SUPPORT

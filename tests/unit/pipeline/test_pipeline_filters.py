"""Tests of the message filters on every stream: ``MessageInspector`` with ``ListFilter`` and
``ListChangedFilter`` and a real Cedar policy (``POLICY``).

A GET stream's responses are judged by the session's ``RequestLedger`` (a list replayed after
``Last-Event-ID`` is filtered as the answer to the request it answers; anything else is dropped
and reported); without a principal a list is empty; resource templates are filtered like
resources; ``notifications/tools/list_changed`` marks the catalog stale. The end-to-end
counterparts are in ``tests/e2e/test_stream_inspection.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bastion.config import HttpUpstream, RouteSettings
from bastion.pipeline.context import Exchange, HttpRequest, JsonReply, SseEvent, SseReply
from bastion.pipeline.filters import MessageInspector, StreamKind
from bastion.pipeline.stages import inspect as inspect_stage
from bastion.pipeline.stages.inspect import ListFilter
from bastion.pipeline.stages.list_changed import ListChangedFilter
from bastion.policy import PolicyEngine
from bastion.principal import Principal
from bastion.stores.sessions import RequestLedger, SentRequest, Session
from bastion.transport.routes import RouteRuntime

POLICY = """
@id("support-search")
permit (principal in Group::"support", action == Action::"tools/call", resource == Tool::"notes/search");

@id("support-notes-template")
permit (principal in Group::"support", action == Action::"resources/read", resource == Resource::"notes/notes://{name}");
"""
TOOLS = [{"name": name, "annotations": {"readOnlyHint": True}} for name in ("search", "export_all", "purge")]
TEMPLATES = [{"uriTemplate": "notes://{name}", "name": "note"}, {"uriTemplate": "secrets://{name}", "name": "secret"}]
SUPPORT = Principal(
    kind="User", sub="sam", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0, groups=("support",)
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    path = tmp_path_factory.mktemp("policy") / "filters.cedar"
    path.write_text(POLICY, encoding="utf-8")
    return PolicyEngine.load([path])


class Drops:
    """The ``on_drop`` handler: keeps ``(message, reason)`` of every drop reported."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any] | None, str]] = []

    async def __call__(self, exchange: Exchange, message: dict[str, Any] | None, reason: str) -> None:
        self.seen.append((message, reason))

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason in self.seen]


def _route() -> RouteRuntime:
    return RouteRuntime(
        settings=RouteSettings(name="notes", http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True)),
        resource_uri="http://gw.test/mcp/notes",
        metadata_url="http://gw.test/.well-known/oauth-protected-resource/mcp/notes",
    )


def _get_stream(*sent: SentRequest, principal: Principal | None = SUPPORT, session: bool = True) -> Exchange:
    """A GET (event stream) exchange of a session whose client sent ``sent``."""
    exchange = Exchange(route=_route(), http=HttpRequest("GET", "/mcp/notes", {}, (), "127.0.0.1"))
    exchange.principal = principal
    if session:
        exchange.session = Session(id="s1", route="notes", principal_key="k")
        for request in sent:
            exchange.session.requests.remember(request)
    return exchange


def _post(method: str, principal: Principal | None = SUPPORT, rpc_id: Any = 1) -> Exchange:
    message = {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": {}}
    request = HttpRequest("POST", "/mcp/notes", {}, (), "127.0.0.1", json.dumps(message).encode())
    exchange = Exchange(route=_route(), http=request)
    exchange.message, exchange.kind, exchange.principal = message, "request", principal
    return exchange


def _answer(rpc_id: Any, key: str = "tools", items: list[dict[str, Any]] = TOOLS) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "result": {key: [dict(item) for item in items]}}


async def _relay(
    inspector: MessageInspector, exchange: Exchange, events: list[SseEvent], stream: StreamKind = "stream"
) -> list[SseEvent]:
    async def upstream() -> AsyncIterator[SseEvent]:
        for event in events:
            yield event

    exchange.reply = SseReply(200, upstream())
    inspector.wrap(exchange, stream)
    return [event async for event in exchange.reply.events]


def _inspector(engine: PolicyEngine, drops: Drops) -> MessageInspector:
    return MessageInspector([ListFilter(engine), ListChangedFilter()], on_drop=drops)


# --- GET streams: the session's ledger ------------------------------------------------------


async def test_a_list_replayed_on_a_get_stream_is_filtered_as_the_answer_it_is(engine: PolicyEngine) -> None:
    drops = Drops()
    exchange = _get_stream(SentRequest(1, "tools/list"))
    relayed = await _relay(_inspector(engine, drops), exchange, [SseEvent(message=_answer(1), id="s1-1")])
    assert [tool["name"] for tool in relayed[0].message["result"]["tools"]] == ["search"]
    assert relayed[0].id == "s1-1"
    assert drops.seen == []


async def test_a_response_to_a_request_never_sent_is_dropped_on_a_get_stream(engine: PolicyEngine) -> None:
    drops = Drops()
    exchange = _get_stream(SentRequest(1, "tools/list"))
    events = [
        SseEvent(message=_answer(4242), id="e1"),  # nobody sent 4242
        SseEvent(message=_answer("1")),  # "1" is not 1 (JSON-RPC 2.0 section 5)
        SseEvent(message={"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "after"}}),
    ]
    relayed = await _relay(_inspector(engine, drops), exchange, events)
    assert [(event.id, event.message, event.data) for event in relayed[:1]] == [("e1", None, "")]  # the id kept
    assert [event.message["method"] for event in relayed[1:]] == ["notifications/message"]
    assert drops.reasons == ["unsolicited_response", "unsolicited_response"]
    assert [message["id"] for message, _ in drops.seen if message is not None] == [4242, "1"]


class Shared:
    """A ``SharedRequests`` of another replica: ``entries`` by session id, or ``failing``."""

    def __init__(self, entries: dict[str, list[SentRequest]], *, failing: bool = False) -> None:
        self.entries, self.failing, self.asked = entries, failing, 0

    async def record(self, session_id: str, request: SentRequest) -> bool:
        self.entries.setdefault(session_id, []).append(request)
        return True

    async def find(self, session_id: str, rpc_id: Any) -> SentRequest | None:
        self.asked += 1
        if self.failing:
            raise ConnectionError("the shared store is gone")
        return next((r for r in self.entries.get(session_id, []) if r.rpc_id == rpc_id), None)


def _resumed(shared: Shared, session_id: str = "s1") -> Exchange:
    """A GET stream on a replica whose own ledger of the session is empty, with ``shared`` behind it."""
    exchange = _get_stream(session=False)
    ledger = RequestLedger(session_id=session_id, shared=shared)
    exchange.session = Session(id=session_id, route="notes", principal_key="k", requests=ledger)
    return exchange


async def test_an_answer_to_a_request_shared_by_another_replica_is_relayed_filtered(engine: PolicyEngine) -> None:
    drops = Drops()
    shared = Shared({"s1": [SentRequest(1, "tools/list")], "s2": [SentRequest(2, "tools/list")]})
    exchange = _resumed(shared)
    events = [SseEvent(message=_answer(1), id="e1"), SseEvent(message=_answer("1"), id="e2"),
              SseEvent(message=_answer(2), id="e3"), SseEvent(message=_answer(1), id="e4")]  # fmt: skip
    relayed = await _relay(_inspector(engine, drops), exchange, events)
    assert [(event.id, event.message is not None) for event in relayed] == [
        ("e1", True), ("e2", False), ("e3", False), ("e4", True)
    ]  # fmt: skip
    assert [tool["name"] for tool in relayed[0].message["result"]["tools"]] == ["search"]  # inspected as tools/list
    assert drops.reasons == ["unsolicited_response", "unsolicited_response"]  # "1" is not 1; 2 is another session's
    assert shared.asked == 3  # the answer found once is remembered here: e4 costs no lookup


async def test_an_answer_whose_shared_lookup_fails_is_withheld_and_reported(engine: PolicyEngine) -> None:
    drops = Drops()
    exchange = _resumed(Shared({"s1": [SentRequest(1, "tools/list")]}, failing=True))
    relayed = await _relay(_inspector(engine, drops), exchange, [SseEvent(message=_answer(1), id="e1")])
    assert [(event.id, event.message, event.data) for event in relayed] == [("e1", None, "")]
    assert drops.reasons == ["ledger_unavailable"]


async def test_a_posts_own_reply_never_looks_in_the_shared_ledger(engine: PolicyEngine) -> None:
    drops = Drops()
    shared = Shared({"s1": [SentRequest(999, "tools/list")]})
    exchange = _post("tools/list")
    exchange.session = _resumed(shared).session
    relayed = await _relay(_inspector(engine, drops), exchange, [SseEvent(message=_answer(999))], stream="reply")
    assert relayed == []
    assert drops.reasons == ["unsolicited_response"]
    assert shared.asked == 0


async def test_a_get_stream_without_a_session_relays_no_response(engine: PolicyEngine) -> None:
    drops = Drops()
    relayed = await _relay(_inspector(engine, drops), _get_stream(session=False), [SseEvent(message=_answer(1))])
    assert relayed == []
    assert drops.reasons == ["unsolicited_response"]


async def test_a_value_that_is_not_one_message_is_dropped(engine: PolicyEngine) -> None:
    drops = Drops()
    exchange = _get_stream(SentRequest(1, "tools/list"))
    relayed = await _relay(_inspector(engine, drops), exchange, [SseEvent(message=[_answer(1)]), SseEvent(message=7)])
    assert relayed == []
    assert drops.reasons == ["not_a_message", "not_a_message"]


# --- POST replies ----------------------------------------------------------------------------


async def test_an_extra_response_on_a_posts_stream_is_dropped_and_the_answer_filtered(engine: PolicyEngine) -> None:
    drops = Drops()
    exchange = _post("tools/list")
    events = [SseEvent(message=_answer(999)), SseEvent(message=_answer(1))]
    relayed = await _relay(_inspector(engine, drops), exchange, events, stream="reply")
    assert [event.message["id"] for event in relayed] == [1]
    assert [tool["name"] for tool in relayed[0].message["result"]["tools"]] == ["search"]
    assert drops.reasons == ["unsolicited_response"]


@pytest.mark.parametrize("stream", ["reply", "stream"])
async def test_without_a_principal_a_list_is_empty(engine: PolicyEngine, stream: StreamKind) -> None:
    """Deny by construction: the list filter never lets a list through unjudged."""
    drops = Drops()
    if stream == "reply":
        exchange = _post("tools/list", principal=None)
        exchange.reply = JsonReply(200, _answer(1))
        await _inspector(engine, drops).inspect_reply(exchange)
        assert isinstance(exchange.reply, JsonReply)
        listed = exchange.reply.message["result"]["tools"]
    else:
        exchange = _get_stream(SentRequest(1, "tools/list"), principal=None)
        relayed = await _relay(_inspector(engine, drops), exchange, [SseEvent(message=_answer(1))])
        listed = relayed[0].message["result"]["tools"]
    assert listed == []
    assert exchange.notes["filtered_out"] == len(TOOLS)


async def test_resource_templates_are_filtered_by_resources_read_on_the_template(engine: PolicyEngine) -> None:
    exchange = _post("resources/templates/list")
    exchange.reply = JsonReply(200, _answer(1, "resourceTemplates", TEMPLATES))
    await _inspector(engine, Drops()).inspect_reply(exchange)
    assert isinstance(exchange.reply, JsonReply)
    assert [t["uriTemplate"] for t in exchange.reply.message["result"]["resourceTemplates"]] == ["notes://{name}"]


# --- list_changed ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["reply", "stream"])
async def test_list_changed_marks_the_catalog_stale_and_is_relayed(engine: PolicyEngine, stream: StreamKind) -> None:
    exchange = _post("tools/call") if stream == "reply" else _get_stream()
    catalog = exchange.route.catalog_for(exchange.principal)
    catalog.merge(TOOLS, complete=True)
    assert catalog.ref("notes", "purge") is not None
    changed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    relayed = await _relay(_inspector(engine, Drops()), exchange, [SseEvent(message=changed)], stream=stream)
    assert [event.message for event in relayed] == [changed]
    assert catalog.stale
    assert catalog.ref("notes", "purge") is None  # the next call reloads it


async def test_other_notifications_leave_the_catalog_fresh(engine: PolicyEngine) -> None:
    exchange = _get_stream()
    catalog = exchange.route.catalog_for(exchange.principal)
    catalog.merge(TOOLS, complete=True)
    other = {"jsonrpc": "2.0", "method": "notifications/resources/list_changed"}
    await _relay(_inspector(engine, Drops()), exchange, [SseEvent(message=other)])
    assert not catalog.stale


async def test_a_long_list_gives_the_event_loop_back_between_items(
    engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy work of a list is cut into slices of ``LIST_SLICE_SECONDS`` with the loop free
    between them (here 0: after every item), and the answer is the same as in one go."""
    monkeypatch.setattr(inspect_stage, "LIST_SLICE_SECONDS", 0.0)
    many = [{"name": f"tool{n}", "annotations": {"readOnlyHint": True}} for n in range(40)] + TOOLS
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    exchange = _post("tools/list")
    exchange.reply = JsonReply(200, _answer(1, items=many))
    running = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await _inspector(engine, Drops()).inspect_reply(exchange)
    during = ticks - before
    stop.set()
    await running
    assert isinstance(exchange.reply, JsonReply)
    assert [tool["name"] for tool in exchange.reply.message["result"]["tools"]] == ["search"]
    assert during >= len(many) - 1

"""Every upstream-to-client message passes inspection, on every stream: proved through real processes.

One ``bastion serve`` process on 127.0.0.1 fronts two upstreams:

- ``hostile``: ``tests/support/hostile_upstream.py``, a Streamable HTTP MCP server written by hand
  that misbehaves when told to (replays a list on a resumed GET stream, answers requests nobody
  sent, aborts a stream half way, fails a DELETE, changes a tool and announces it);
- ``broadcast``: ``tests/support/broadcast_server.py``, a stdio server written with the official
  ``mcp`` SDK (resource templates; a tool that floods the broadcast stream with log notifications).

The policy (``POLICY``): engineering may call every tool, support only ``search``; nobody may call
a destructive tool; engineering may read one resource template. Clients are raw HTTP (``httpx2``)
and, for the templates, the official SDK client. Each test failed before the fixes of 90d470e
(see the test's docstring for how).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import LEGACY_VERSION, connect, legacy_post, open_session, raw_headers, rpc, wait_until
from tests.support.hostile_upstream import TOOLS, HostileUpstream

pytestmark = pytest.mark.e2e

POLICY = """
@id("engineering-all-tools")
permit (principal in Group::"engineering", action == Action::"tools/call", resource);

@id("support-search")
permit (principal in Group::"support", action == Action::"tools/call", resource == Tool::"hostile/search");

@id("no-destructive")
forbid (principal, action == Action::"tools/call", resource) when { resource.risk == "destructive" };

@id("engineering-notes-template")
permit (
  principal in Group::"engineering",
  action == Action::"resources/read",
  resource == Resource::"broadcast/notes://{name}"
);
"""
GROUPS = {"alice": "engineering", "bob": "support"}
FLOOD_COUNT = 800
FLOOD_SIZE = 64 * 1024
BROADCAST_SERVER = str(Path(__file__).resolve().parents[1] / "support" / "broadcast_server.py")


@dataclass
class World:
    """The running Bastion, its hostile upstream, and tokens (minted once)."""

    bastion: BastionProcess
    upstream: HostileUpstream
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, who: str, route: str = "hostile") -> str:
        if (who, route) not in self._tokens:
            self._tokens[who, route] = self.bastion.mint(who, route, GROUPS[who])
        return self._tokens[who, route]

    def records(self, route: str, session: str) -> list[dict[str, Any]]:
        """Every audit record of ``session`` on ``route``, read with ``bastion audit search``, oldest first."""
        found = self.bastion.cli(
            "audit", "search", "--config", str(self.bastion.config_path), "--route", route, "--json"
        )
        records = [json.loads(line) for line in found.stdout.splitlines() if line.strip()]
        return sorted((r for r in records if r.get("session") == session), key=lambda r: r["time"])

    def recorded(self, route: str, session: str, *wanted: tuple[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
        """The first record of each ``(kind, method)`` in ``wanted`` in ``session``, once all are written."""

        def probe() -> dict[tuple[str, str], dict[str, Any]]:
            found: dict[tuple[str, str], dict[str, Any]] = {}
            for record in self.records(route, session):
                found.setdefault((record["kind"], record["method"]), record)
            return found if all(key in found for key in wanted) else {}

        return wait_until(probe, timeout_s=5, interval_s=0.2)

    def record(self, route: str, session: str, kind: str, method: str) -> dict[str, Any]:
        """The first ``kind`` record of ``method`` in ``session``, once it has been written."""
        return self.recorded(route, session, (kind, method))[kind, method]

    def streams(self, route: str) -> int:
        """The open GET streams of a stdio route (Bastion's ``/healthz``)."""
        health = httpx2.get(f"{self.bastion.base_url}/healthz", timeout=5).json()
        return int(health["routes"][route]["streams"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("stream-inspection")
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    with HostileUpstream(workdir) as upstream:
        config = {
            "identity": {"leeway_s": 0},
            "policy": {"files": [str(workdir / "policy.cedar")]},
            "routes": [
                # Both routes trust their servers' annotations: these tests change a tool's annotations
                # and prove the changed definition is what the next call is judged by.
                {
                    "name": "hostile",
                    "http": {"url": upstream.url, "allow_http": True, "allow": ["127.0.0.1"]},
                    "trust_annotations": True,
                },
                {
                    "name": "broadcast",
                    "stdio": {"command": sys.executable, "args": [BROADCAST_SERVER]},
                    "trust_annotations": True,
                },
            ],
        }
        with BastionProcess(workdir, config) as bastion:
            yield World(bastion, upstream)


@pytest.fixture
def world_reset(world: World) -> World:
    """The world with its upstream back to well-behaved defaults."""
    world.upstream.reset()
    return world


# --- reading event streams ------------------------------------------------------------------


@dataclass
class Event:
    """One server-sent event as the client received it: ``id`` and its JSON ``message`` (None if no data)."""

    id: str
    message: Any


def _events(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a ``text/event-stream`` body, as they complete (comments skipped)."""
    event_id = ""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                yield Event(event_id, json.loads(text) if text else None)
            event_id, data = "", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


def _messages(response: httpx2.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a whole SSE reply, in order."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.text
    return [event.message for event in _events(response.text.splitlines()) if event.message is not None]


def _read_until(stream: httpx2.Response, marker: str) -> list[dict[str, Any]]:
    """Read a standing stream's messages up to the ``notifications/message`` whose data is ``marker``."""
    seen: list[dict[str, Any]] = []
    for event in _events(stream.iter_lines()):
        if event.message is None:
            continue
        seen.append(event.message)
        if event.message.get("method") == "notifications/message" and event.message["params"]["data"] == marker:
            return seen
    raise AssertionError(f"the stream ended before {marker!r}; it carried {seen!r}")


def _stream_headers(token: str, session: str, **extra: str) -> dict[str, str]:
    headers = raw_headers(token, mcp_session_id=session, mcp_protocol_version=LEGACY_VERSION, **extra)
    headers["accept"] = "text/event-stream"
    return headers


def _marker() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": uuid.uuid4().hex}}


def _tool_names(message: dict[str, Any]) -> list[str]:
    return [tool["name"] for tool in message["result"]["tools"]]


def _call(http: httpx2.Client, world: World, token: str, session: str, tool: str, rpc_id: int) -> dict[str, Any]:
    response = legacy_post(
        http,
        world.bastion.url("hostile"),
        token,
        session,
        rpc("tools/call", {"name": tool, "arguments": {}}, rpc_id=rpc_id),
    )
    body: dict[str, Any] = response.json()
    return body


# --- 1. a POST stream resumed through GET ---------------------------------------------------


@pytest.mark.parametrize(("who", "expected"), [("alice", list(TOOLS)), ("bob", ["search"])])
def test_a_list_replayed_on_a_resumed_get_stream_is_filtered(world_reset: World, who: str, expected: list[str]) -> None:
    """The upstream ends a ``tools/list`` POST stream after its priming event; the client resumes it with
    ``Last-Event-ID`` on a GET and the upstream replays the whole list there. Each principal gets only
    the tools it may call. Before the fix GET streams were not inspected: bob received all six."""
    world, url, token = world_reset, world_reset.bastion.url("hostile"), world_reset.token(who)
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, url, token)
        world.upstream.set(list_mode="prime_then_end")
        posted = legacy_post(http, url, token, session, rpc("tools/list", {}, rpc_id=1))
        assert posted.status_code == 200, posted.text
        events = list(_events(posted.text.splitlines()))
        assert [event.message for event in events] == [None]  # the priming event, and no answer
        primed = events[0].id
        resumed = http.get(url, headers=_stream_headers(token, session, last_event_id=primed))
    assert resumed.status_code == 200, resumed.text
    gets = [seen for seen in world.upstream.requests() if seen.method == "GET" and seen.path == "/mcp"]
    assert [seen.header("last-event-id") for seen in gets[-1:]] == [[primed]]  # the replay came from upstream
    answers = [message for message in _messages(resumed) if "result" in message]
    assert [answer["id"] for answer in answers] == [1]
    assert _tool_names(answers[0]) == expected


# --- 2. responses to requests the client never sent -----------------------------------------


def test_an_unsolicited_response_on_a_list_stream_is_dropped_and_audited(world_reset: World) -> None:
    """The upstream answers ``tools/list`` on its SSE stream with an extra, unfiltered answer to id 999.
    Before the fix it reached the client with all six tools."""
    world, url, token = world_reset, world_reset.bastion.url("hostile"), world_reset.token("bob")
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, url, token)
        world.upstream.set(list_mode="extra_on_sse")
        posted = legacy_post(http, url, token, session, rpc("tools/list", {}, rpc_id=1))
    assert posted.status_code == 200, posted.text
    messages = _messages(posted)
    assert [message.get("id") for message in messages] == [1]
    assert _tool_names(messages[0]) == ["search"]
    dropped = world.record("hostile", session, "decision", "response")
    assert dropped["decision"]["effect"] == "deny"
    assert dropped["decision"]["reason"] == "unsolicited_response"
    assert dropped["target"] == "999"


def test_a_json_reply_with_another_id_is_refused_and_audited(world_reset: World) -> None:
    """The upstream answers ``tools/list`` id 1 with a JSON reply for id 998. The client gets a JSON-RPC
    error for its own id, not the list. Before the fix it got the reply for 998 with all six tools."""
    world, url, token = world_reset, world_reset.bastion.url("hostile"), world_reset.token("bob")
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, url, token)
        world.upstream.set(list_mode="wrong_id_json")
        posted = legacy_post(http, url, token, session, rpc("tools/list", {}, rpc_id=1))
    body = posted.json()
    assert posted.status_code >= 500, posted.text
    assert body["id"] == 1
    assert "error" in body
    assert "result" not in body
    assert "export_all" not in posted.text
    records = world.recorded("hostile", session, ("decision", "response"), ("outcome", "tools/list"))
    dropped = records["decision", "response"]
    assert (dropped["decision"]["effect"], dropped["decision"]["reason"]) == ("deny", "unsolicited_response")
    assert dropped["target"] == "998"
    assert records["outcome", "tools/list"]["result"]["error"] is True
    assert records["outcome", "tools/list"]["result"]["error_code"] == "answer_withheld"


def test_a_response_on_a_get_stream_to_a_request_never_sent_is_dropped(world_reset: World) -> None:
    """On a standing GET stream the upstream sends an answer (with every tool) to id 4242, which the
    client never used. It is dropped and audited; what follows still arrives. Before the fix GET
    streams were relayed uninspected."""
    world, url, token = world_reset, world_reset.bastion.url("hostile"), world_reset.token("bob")
    unsolicited = {
        "jsonrpc": "2.0",
        "id": 4242,
        "result": {"tools": [{"name": name, "inputSchema": {"type": "object"}} for name in TOOLS]},
    }
    marker = _marker()
    with httpx2.Client(timeout=httpx2.Timeout(10, read=5)) as http:
        session = open_session(http, url, token)
        before = world.upstream.streams()
        with http.stream("GET", url, headers=_stream_headers(token, session)) as stream:
            assert stream.status_code == 200
            wait_until(lambda: world.upstream.streams() > before, timeout_s=5)
            world.upstream.push(unsolicited)
            world.upstream.push(marker)
            seen = _read_until(stream, marker["params"]["data"])
    assert [message.get("id") for message in seen] == [None]  # the marker only
    dropped = world.record("hostile", session, "decision", "response")
    assert (dropped["decision"]["effect"], dropped["decision"]["reason"]) == ("deny", "unsolicited_response")
    assert dropped["target"] == "4242"


# --- 3. resource templates ------------------------------------------------------------------


@pytest.mark.parametrize(("who", "expected"), [("alice", ["notes://{name}"]), ("bob", [])])
def test_resource_templates_are_filtered_by_policy(world: World, who: str, expected: list[str]) -> None:
    """``resources/templates/list`` of a real SDK server (stdio) keeps the templates the principal may read
    (``resources/read`` on the ``uriTemplate``). Before the fix both templates were listed to everyone."""

    async def listed() -> list[str]:
        async with connect(world.bastion.url("broadcast"), world.token(who, "broadcast"), "legacy") as client:
            result = await client.list_resource_templates()
            return [template.uri_template for template in result.resource_templates]

    assert asyncio.run(listed()) == expected


# --- 4. an upstream that fails in the middle of a stream ------------------------------------


def test_an_upstream_failing_mid_stream_ends_the_stream_with_an_error(world_reset: World) -> None:
    """The upstream sends SSE headers and a progress notification for ``tools/call`` id 5, then aborts
    the connection. The client gets the progress, then a JSON-RPC error for id 5, and the outcome
    record says error. Before the fix the stream ended silently and the outcome said no error."""
    world, url, token = world_reset, world_reset.bastion.url("hostile"), world_reset.token("alice")
    call = rpc("tools/call", {"name": "explode", "arguments": {}, "_meta": {"progressToken": "pt-5"}}, rpc_id=5)
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, url, token)
        posted = legacy_post(http, url, token, session, call)
    assert posted.status_code == 200, posted.text
    messages = _messages(posted)
    assert messages[0]["method"] == "notifications/progress"
    assert messages[0]["params"]["progressToken"] == "pt-5"
    assert len(messages) == 2, messages  # the progress, then the error; never a silent end
    assert messages[-1].get("id") == 5
    assert "error" in messages[-1]
    outcome = world.record("hostile", session, "outcome", "tools/call")
    assert outcome["target"] == "explode"
    assert outcome["result"]["error"] is True


# --- 5. a DELETE the upstream refuses -------------------------------------------------------


def test_a_failed_upstream_delete_is_a_502_and_ends_bastions_session(world_reset: World) -> None:
    """The upstream answers DELETE with 500. The client gets a 502 with a JSON-RPC error body,
    Bastion's session is gone, and the outcome record says error. Before the fix the client got 200."""
    world, url, token = world_reset, world_reset.bastion.url("hostile"), world_reset.token("alice")
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, url, token)
        world.upstream.set(delete_status=500)
        deleted = http.delete(
            url, headers=raw_headers(token, mcp_session_id=session, mcp_protocol_version=LEGACY_VERSION)
        )
        later = legacy_post(http, url, token, session, rpc("tools/list", {}, rpc_id=2))
    assert deleted.status_code == 502, deleted.text
    body = deleted.json()
    assert body["jsonrpc"] == "2.0"
    assert isinstance(body["error"]["code"], int)
    assert "500" in body["error"]["message"]
    assert later.status_code == 404, later.text
    outcome = world.record("hostile", session, "outcome", "session/delete")
    assert outcome["result"]["error"] is True
    assert outcome["upstream"]["status"] == 500


# --- 6. a changed tool, announced on an HTTP route ------------------------------------------


def test_list_changed_on_a_get_stream_makes_the_next_call_use_the_new_definition(world_reset: World) -> None:
    """``purge`` is read-only, so alice may call it; the upstream makes it destructive and announces
    ``notifications/tools/list_changed`` on the session's GET stream; the next call is judged by the
    new definition and denied. Before the fix only stdio routes marked the catalog stale: allowed."""
    world, url, token = world_reset, world_reset.bastion.url("hostile"), world_reset.token("alice")
    marker = _marker()
    with httpx2.Client(timeout=httpx2.Timeout(10, read=5)) as http:
        session = open_session(http, url, token)
        assert _call(http, world, token, session, "purge", 2)["result"]["content"][0]["text"] == "ok purge"
        before = world.upstream.streams()
        with http.stream("GET", url, headers=_stream_headers(token, session)) as stream:
            wait_until(lambda: world.upstream.streams() > before, timeout_s=5)
            world.upstream.set(destructive={"purge"})
            world.upstream.push({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            world.upstream.push(marker)
            seen = _read_until(stream, marker["params"]["data"])
        assert seen[0]["method"] == "notifications/tools/list_changed"  # relayed unchanged
        denied = _call(http, world, token, session, "purge", 3)
    assert "error" in denied, denied
    assert denied["error"]["data"]["policies"] == ["no-destructive"]


def test_list_changed_on_a_post_stream_makes_the_next_call_use_the_new_definition(world_reset: World) -> None:
    """As above, with the announcement on a POST's SSE stream (the upstream's answer to ``announce``)."""
    world, url, token = world_reset, world_reset.bastion.url("hostile"), world_reset.token("alice")
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, url, token)
        assert _call(http, world, token, session, "wipe", 2)["result"]["content"][0]["text"] == "ok wipe"
        world.upstream.set(destructive={"wipe"})
        announced = legacy_post(
            http, url, token, session, rpc("tools/call", {"name": "announce", "arguments": {}}, rpc_id=3)
        )
        assert [m.get("method") for m in _messages(announced)] == ["notifications/tools/list_changed", None]
        denied = _call(http, world, token, session, "wipe", 4)
    assert "error" in denied, denied
    assert denied["error"]["data"]["policies"] == ["no-destructive"]


# --- 7. a stdio listener that falls behind --------------------------------------------------


def test_a_stdio_listener_that_falls_behind_has_its_stream_ended(world: World) -> None:
    """A client opens the GET stream of a stdio route and does not read it while the server sends
    800 log notifications of 64 KiB. Once the socket buffers and its 256-deep queue are full, the
    stream ends instead of silently skipping notifications, and the ``stream/open`` outcome says
    error. Before the fix the overflow was dropped silently and the stream stayed open (here: a
    read timeout)."""
    url, token = world.bastion.url("broadcast"), world.token("alice", "broadcast")
    flood = rpc("tools/call", {"name": "flood", "arguments": {"count": FLOOD_COUNT, "size": FLOOD_SIZE}}, rpc_id=2)
    with httpx2.Client(timeout=httpx2.Timeout(20, read=5)) as listener, httpx2.Client(timeout=20) as caller:
        session = open_session(listener, url, token)
        before = world.streams("broadcast")
        with listener.stream("GET", url, headers=_stream_headers(token, session)) as stream:
            assert stream.status_code == 200
            wait_until(lambda: world.streams("broadcast") > before, timeout_s=5)
            flooder = open_session(caller, url, token)
            done = legacy_post(caller, url, token, flooder, flood)
            assert done.json()["result"]["content"][0]["text"] == f"sent {FLOOD_COUNT}", done.text
            try:
                received = sum(1 for event in _events(stream.iter_lines()) if event.message is not None)
            except httpx2.ReadTimeout:
                pytest.fail("the stream of a listener that fell behind stayed open")
    assert 0 < received < FLOOD_COUNT
    outcome = world.record("broadcast", session, "outcome", "stream/open")
    assert outcome["result"]["error"] is True
    assert outcome["result"]["error_code"] == "listener_overflow"

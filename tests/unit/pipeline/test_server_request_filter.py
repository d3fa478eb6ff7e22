"""The server-request filter (sampling, elicitation, roots decided like calls) and the stdio relay's
refusal to guess which client a server-to-client request belongs to."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.audit_fakes import RecordingAuditLog

import bastion
from bastion.config import HttpUpstream, RouteSettings
from bastion.config.limits import DataFlowSettings
from bastion.limits.activity import SessionActivity
from bastion.pipeline.context import Exchange, HttpRequest
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.server_requests import ServerRequestFilter
from bastion.policy import Decision, PolicyEngine, ResourceRef
from bastion.principal import Principal
from bastion.stores.memory_activity import MemoryActivityStore
from bastion.transport.routes import RouteRuntime
from bastion.upstream.stdio import StdioServer

DEMO_POLICY = Path(bastion.__file__).parent / "demo" / "demo.cedar"
ALICE = Principal(kind="User", sub="alice", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0)


class Rig:
    def __init__(self) -> None:
        self.log = RecordingAuditLog()
        self.answers: list[dict[str, Any]] = []
        engine = PolicyEngine.load([DEMO_POLICY])  # permits elicitation/create to everyone, nothing else
        self.filter = ServerRequestFilter(engine, AuditStage(self.log, policy_version="v1"), self._answer)  # type: ignore[arg-type]

    async def _answer(self, exchange: Exchange, response: dict[str, Any]) -> None:
        self.answers.append(response)

    async def apply(
        self, message: dict[str, Any], *, principal: Principal | None = ALICE, era: str = "handshake"
    ) -> Any:
        route = RouteRuntime(
            settings=RouteSettings(name="notes", http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True)),
            resource_uri="http://gw.test/mcp/notes",
            metadata_url="http://gw.test/.well-known/oauth-protected-resource/mcp/notes",
        )
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search_notes"}}
        exchange = Exchange(
            route=route, http=HttpRequest("POST", "/mcp/notes", {}, (), None, json.dumps(call).encode())
        )
        exchange.message, exchange.kind, exchange.principal, exchange.era = call, "request", principal, era  # type: ignore[assignment]
        exchange.target = "search_notes"
        return await self.filter.apply(exchange, message, None)


def _request(method: str, rpc_id: Any = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": {}}


async def test_a_permitted_request_is_relayed_and_recorded() -> None:
    rig = Rig()
    message = _request("elicitation/create")
    assert await rig.apply(message) is message
    assert rig.answers == []
    (record,) = rig.log.bodies
    assert (record["method"], record["target"], record["decision"]["effect"]) == (
        "elicitation/create",
        "search_notes",
        "allow",
    )


@pytest.mark.parametrize("method", ["sampling/createMessage", "roots/list", "tasks/get", "bastion/anything"])
async def test_what_no_policy_permits_is_answered_upstream_and_never_relayed(method: str) -> None:
    rig = Rig()
    assert await rig.apply(_request(method)) is None
    assert rig.answers == [{"jsonrpc": "2.0", "id": 7, "error": {"code": -32003, "message": "Denied by Bastion"}}]
    (record,) = rig.log.bodies
    assert (record["method"], record["decision"]["effect"], record["decision"]["reason"]) == (
        method,
        "deny",
        "policy_denied",
    )


@pytest.mark.parametrize(
    ("principal", "era"), [(None, "handshake"), (ALICE, "modern")], ids=["no-principal", "2026-07-28"]
)
async def test_without_a_principal_or_on_a_stateless_request_even_elicitation_is_denied(
    principal: Principal | None, era: str
) -> None:
    rig = Rig()
    assert await rig.apply(_request("elicitation/create"), principal=principal, era=era) is None
    assert [a["error"]["code"] for a in rig.answers] == [-32003]


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}},
        {"jsonrpc": "2.0", "id": 1, "result": {}},
        {"jsonrpc": "2.0", "id": 9, "method": "ping"},
    ],
    ids=["notification", "response", "ping"],
)
async def test_notifications_responses_and_pings_pass_without_a_decision(message: dict[str, Any]) -> None:
    rig = Rig()
    assert await rig.apply(message) is message
    assert rig.log.bodies == []
    assert rig.answers == []


class Captured(StdioServer):
    """A stdio server whose writes are captured instead of sent to a process."""

    def __init__(self) -> None:
        super().__init__("s", "true")
        self.written: list[dict[str, Any]] = []

    async def _write(self, message: dict[str, Any]) -> None:
        self.written.append(message)


@pytest.mark.parametrize("in_flight", [0, 2])
async def test_the_stdio_relay_never_guesses_the_client(in_flight: int) -> None:
    """stdio has no related request: with no call or several calls in flight, the server gets an error."""
    import asyncio

    server = Captured()
    relayed: list[dict[str, Any]] = []

    async def handler(message: dict[str, Any]) -> dict[str, Any]:
        relayed.append(message)
        return {"result": {}}

    for rid in range(in_flight):
        server._pending[rid] = asyncio.get_running_loop().create_future()
        server._requesters[rid] = handler
    await server._dispatch(_request("elicitation/create", rpc_id=0))
    assert relayed == []
    (answer,) = server.written
    assert answer["id"] == 0
    assert answer["error"]["code"] == -32603


async def test_the_stdio_relay_answers_with_the_one_caller_s_reply() -> None:
    import asyncio

    server = Captured()

    async def handler(message: dict[str, Any]) -> dict[str, Any]:
        return {"result": {"action": "accept", "content": {"ok": True}}}

    server._pending[5] = asyncio.get_running_loop().create_future()
    server._requesters[5] = handler
    await server._dispatch(_request("elicitation/create", rpc_id=3))
    await asyncio.gather(*server._relays)
    assert server.written == [{"jsonrpc": "2.0", "id": 3, "result": {"action": "accept", "content": {"ok": True}}}]



async def test_a_server_request_is_decided_with_the_callers_session_labels(tmp_path: Path) -> None:
    activity = SessionActivity(MemoryActivityStore(), caps={}, data_flow=DataFlowSettings(), track_labels=True,
                               session_idle_s=60)  # fmt: skip
    (tmp_path / "p.cedar").write_text(
        '@id("sample") permit (principal, action == Action::"sampling/createMessage", resource);\n'
        '@id("no-sampling-after-the-web") forbid (principal, action == Action::"sampling/createMessage", resource) '
        'when { context.session_labels.contains("untrusted_content") };\n',
        encoding="utf-8",
    )
    rig = Rig()
    engine = PolicyEngine.load([tmp_path / "p.cedar"])
    rig.filter = ServerRequestFilter(engine, AuditStage(rig.log, policy_version="v1"), rig._answer, activity)  # type: ignore[arg-type]
    message = _request("sampling/createMessage")
    assert await rig.apply(message) is message
    web = SimpleNamespace(  # an earlier call of ALICE's, through the same client, of a tool labelled untrusted_content
        decision=Decision("allow", ("p",), {}, ()), principal=ALICE, action="tools/call", target="fetch", session=None,
        resource=ResourceRef.from_tool("web", {"name": "fetch"}, risk="read", labels=["untrusted_content"]),
        route=SimpleNamespace(name="web", settings=SimpleNamespace(denials="jsonrpc")),
    )  # fmt: skip
    await activity.admit(web)  # type: ignore[arg-type]
    assert await rig.apply(_request("sampling/createMessage", 8)) is None
    assert rig.log.bodies[-1]["decision"]["policy_ids"] == ["no-sampling-after-the-web"]

"""Tests of ``bastion.transport.endpoint.McpEndpoint`` with the real GET/DELETE stages, a fake POST path,
a fake authenticator and an in-memory audit log."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.audit_fakes import RecordingAuditLog
from transport_asgi import Sink

from bastion.config import RouteSettings, StdioUpstream
from bastion.errors import AuthenticationError, BodyTooLarge
from bastion.pipeline.context import Exchange, JsonReply
from bastion.pipeline.plan import assemble
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.authenticate import AuthenticateStage
from bastion.pipeline.stages.authorize import SESSION_DECISION, AuthorizeStage
from bastion.pipeline.stages.forward_stdio import StdioEndStage, StdioStreamStage
from bastion.pipeline.stages.session import SessionStage
from bastion.pipeline.stages.transport import StreamTransportStage
from bastion.principal import Principal
from bastion.stores.memory_sessions import MemorySessionStore
from bastion.transport.checks import OriginPolicy
from bastion.transport.endpoint import McpEndpoint
from bastion.transport.routes import RouteRuntime

HOST = "127.0.0.1:8080"
METADATA = "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp/r"


def _principal(sub: str) -> Principal:
    return Principal(kind="User", sub=sub, issuer="http://127.0.0.1:8080", auth_method="bastion_jwt", expires_at=0)


class FakeAuthenticator:
    def __init__(self) -> None:
        self.audiences: list[str] = []

    async def authenticate(self, token: str, audience: str) -> Principal:
        self.audiences.append(audience)
        if token.startswith("good-"):
            return _principal(token.removeprefix("good-"))
        raise AuthenticationError("bad_signature")


class FakePost:
    """The POST path's stand-in: a stage that records the exchange and allows it."""

    name = "transport"

    def __init__(self) -> None:
        self.handled: list[Exchange] = []

    async def run(self, exchange: Exchange) -> None:
        self.handled.append(exchange)
        exchange.message, exchange.kind = {"jsonrpc": "2.0", "id": 1, "method": "ping"}, "request"
        exchange.decision = SESSION_DECISION


class Answer:
    name = "forward"

    async def run(self, exchange: Exchange) -> None:
        exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": 1, "result": {}})


class Rig:
    def __init__(self) -> None:
        self.post = FakePost()
        self.log = RecordingAuditLog()

    @property
    def handled(self) -> list[Exchange]:
        return self.post.handled

    def decisions(self) -> list[dict[str, Any]]:
        return self.log.of_kind("decision")

    def outcomes(self) -> list[dict[str, Any]]:
        return self.log.of_kind("outcome")


@pytest.fixture
def sessions() -> MemorySessionStore:
    return MemorySessionStore()


@pytest.fixture
def pipeline() -> Rig:
    return Rig()


@pytest.fixture
def endpoint(sessions: MemorySessionStore, pipeline: Rig) -> McpEndpoint:
    route = RouteRuntime(
        settings=RouteSettings(name="r", stdio=StdioUpstream(command="true")),
        resource_uri="http://127.0.0.1:8080/mcp/r",
        metadata_url=METADATA,
    )
    origins = OriginPolicy.for_listener("http://127.0.0.1:8080", 8080)
    authenticate = AuthenticateStage(FakeAuthenticator())
    session, authorize = SessionStage(sessions), AuthorizeStage(None)  # type: ignore[arg-type]  # no Cedar action here
    pipelines = assemble(
        checks={"transport": pipeline.post},
        stream_checks={
            "transport": StreamTransportStage(origins),
            "authenticate": authenticate,
            "session": session,
            "authorize": authorize,
        },
        forward={"POST": Answer(), "GET": StdioStreamStage(), "DELETE": StdioEndStage(sessions)},
        filters={},
        audit=AuditStage(pipeline.log, policy_version="v1"),  # type: ignore[arg-type]
    )
    return McpEndpoint(route, pipelines, max_body=1024)


async def _call(endpoint: McpEndpoint, method: str, headers: dict[str, str], body: bytes = b"") -> Sink:
    scope = {
        "type": "http",
        "method": method,
        "path": "/mcp/r",
        "headers": [(k.encode(), v.encode()) for k, v in {"host": HOST, **headers}.items()],
        "client": ("127.0.0.1", 1),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    sink = Sink()
    await endpoint(scope, receive, sink)
    return sink


@pytest.mark.parametrize("method", ["PUT", "PATCH", "HEAD", "OPTIONS"])
async def test_other_methods_are_405(endpoint: McpEndpoint, method: str, pipeline: Rig) -> None:
    sink = await _call(endpoint, method, {})
    assert sink.status == 405
    assert sink.headers["allow"] == "GET, POST, DELETE"
    assert pipeline.handled == []


async def test_post_runs_the_pipeline_and_finishes(endpoint: McpEndpoint, pipeline: Rig) -> None:
    sink = await _call(endpoint, "POST", {"content-type": "application/json"}, b"{}")
    assert sink.status == 200
    assert len(pipeline.handled) == 1
    (outcome,) = pipeline.outcomes()  # finished: the outcome record carries the bytes sent
    assert outcome["result"]["response_bytes"] > 0


async def test_a_body_over_the_limit_is_a_413_json_rpc_error(endpoint: McpEndpoint, pipeline: Rig) -> None:
    sink = await _call(endpoint, "POST", {"content-length": "4096"}, b"x" * 4096)
    assert sink.status == 413
    assert sink.json["error"]["code"] == BodyTooLarge.jsonrpc_code
    assert sink.json["jsonrpc"] == "2.0"
    assert pipeline.handled == []
    assert [d["decision"]["reason"] for d in pipeline.decisions()] == ["body_too_large"]  # refused, and recorded


async def test_delete_without_a_token_is_401_with_the_metadata_challenge(
    endpoint: McpEndpoint, pipeline: Rig
) -> None:
    sink = await _call(endpoint, "DELETE", {"mcp-session-id": "x"})
    assert sink.status == 401
    assert sink.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA}"'
    assert [d["method"] for d in pipeline.decisions()] == ["session/delete"]
    assert pipeline.decisions()[0]["decision"]["effect"] == "deny"


async def test_delete_with_a_bad_token_says_invalid_token(endpoint: McpEndpoint) -> None:
    sink = await _call(endpoint, "DELETE", {"mcp-session-id": "x", "authorization": "Bearer nope"})
    assert sink.status == 401
    assert sink.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA}", error="invalid_token"'


async def test_delete_without_a_session_id_is_400(endpoint: McpEndpoint) -> None:
    sink = await _call(endpoint, "DELETE", {"authorization": "Bearer good-alice"})
    assert sink.status == 400


async def test_get_without_a_session_id_is_405(endpoint: McpEndpoint) -> None:
    sink = await _call(endpoint, "GET", {"authorization": "Bearer good-alice", "accept": "text/event-stream"})
    assert sink.status == 405


async def test_get_that_does_not_accept_sse_is_406(endpoint: McpEndpoint) -> None:
    sink = await _call(endpoint, "GET", {"authorization": "Bearer good-alice", "accept": "application/json"})
    assert sink.status == 406


async def test_a_foreign_host_is_403_before_authentication(endpoint: McpEndpoint) -> None:
    sink = await _call(endpoint, "DELETE", {"host": "evil.example", "mcp-session-id": "x"})
    assert sink.status == 403


async def test_delete_of_another_principals_session_is_404(endpoint: McpEndpoint, sessions: MemorySessionStore) -> None:
    session = await sessions.create("r", _principal("alice").key)
    sink = await _call(endpoint, "DELETE", {"authorization": "Bearer good-mallory", "mcp-session-id": session.id})
    assert sink.status == 404
    kept = await sessions.get(session.id, "r", _principal("alice").key)
    assert kept is not None
    assert kept.id == session.id


async def test_delete_of_an_own_session_forgets_it(endpoint: McpEndpoint, sessions: MemorySessionStore) -> None:
    session = await sessions.create("r", _principal("alice").key)
    sink = await _call(endpoint, "DELETE", {"authorization": "Bearer good-alice", "mcp-session-id": session.id})
    assert sink.status == 200
    assert await sessions.get(session.id, "r", _principal("alice").key) is None

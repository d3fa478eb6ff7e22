"""Cross-origin access (``bastion.transport.cors``) through the assembled app (``build_app``).

A route's MCP endpoint answers the browsers of ``server.cors.allowed_origins`` and nobody else;
the protected resource metadata and the JWKS are readable from every origin, without credentials.
The endpoint here is a stand-in that answers as ``McpEndpoint`` does (405 for other methods, the
Origin check's 403, a 401 challenge, a reply that opens a session), with its Origin check built
from ``ServerSettings`` as the gateway builds it; the real endpoint behind the same layer is
tested in Chromium (``tests/e2e/test_browser_cors.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from bastion.config import RouteSettings, ServerSettings, StdioUpstream
from bastion.errors import ForbiddenOrigin
from bastion.pipeline.context import EmptyReply, JsonReply, Reply
from bastion.transport.app import build_app
from bastion.transport.checks import OriginPolicy
from bastion.transport.cors import EXPOSED_HEADERS, REQUEST_HEADERS
from bastion.transport.routes import RouteRuntime
from bastion.transport.wire import send_reply

BASE = "http://127.0.0.1:8080"
ENDPOINT = "/mcp/r"
METADATA = "/.well-known/oauth-protected-resource/mcp/r"
CHALLENGE = f'Bearer resource_metadata="{BASE + METADATA}"'
BROWSER = "http://localhost:5173"  # the allowed page's origin
STRANGER = "https://evil.example"
JWKS = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1"}]}


class StandInEndpoint:
    """Answers as ``McpEndpoint`` does: other methods 405; a refused Host or Origin 403; DELETE
    without a token 401 with the RFC 9728 challenge; POST an ``initialize`` reply opening ``s-1``."""

    def __init__(self, origins: OriginPolicy) -> None:
        self.route = RouteRuntime(
            settings=RouteSettings(name="r", stdio=StdioUpstream(command="true")),
            resource_uri=BASE + ENDPOINT,
            metadata_url=BASE + METADATA,
        )
        self.origins = origins
        self.served: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.served.append(scope["method"])
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        reply: Reply
        if scope["method"] not in ("POST", "GET", "DELETE"):
            reply = EmptyReply(405, {"allow": "GET, POST, DELETE"})
        else:
            try:
                self.origins.check(headers)
            except ForbiddenOrigin as exc:
                reply = JsonReply(
                    403, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": exc.message}}
                )
            else:
                if scope["method"] == "POST":
                    opened = {"mcp-session-id": "s-1", "mcp-protocol-version": "2025-11-25"}
                    reply = JsonReply(200, {"jsonrpc": "2.0", "id": 1, "result": {}}, opened)
                else:
                    reply = EmptyReply(401, {"www-authenticate": CHALLENGE})
        await send_reply(send, reply)


def _client(**cors: Any) -> tuple[TestClient, StandInEndpoint]:
    server = ServerSettings(port=8080, cors=cors)
    endpoint = StandInEndpoint(OriginPolicy.for_listener(server.base_url, server.port, (), server.browser_origins))
    app = build_app(
        [endpoint],  # type: ignore[list-item]
        authorization_server=BASE,
        jwks=lambda: JWKS,
        health=dict,
        cors=server.cors,
    )
    return TestClient(app, base_url=BASE), endpoint


@pytest.fixture
def http() -> Iterator[TestClient]:
    client, _ = _client(allowed_origins=[BROWSER])
    yield client
    client.close()


def _preflight(http: TestClient, path: str, origin: str, method: str = "POST", headers: str = "") -> Any:
    request = {"origin": origin, "access-control-request-method": method}
    if headers:
        request["access-control-request-headers"] = headers
    return http.options(path, headers=request)


def _listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


# --- the MCP endpoint ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_a_preflight_from_an_allowed_origin_is_answered(method: str) -> None:
    http, endpoint = _client(allowed_origins=[BROWSER])
    asked = ", ".join(name.lower() for name in REQUEST_HEADERS)
    response = _preflight(http, ENDPOINT, BROWSER, method, asked)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == BROWSER
    assert _listed(response.headers["access-control-allow-methods"]) == {"post", "get", "delete"}
    assert _listed(response.headers["access-control-allow-headers"]) >= _listed(asked)
    assert response.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in response.headers
    assert "origin" in _listed(response.headers["vary"])
    assert endpoint.served == []  # answered before the endpoint


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        (STRANGER, "POST", "content-type"),  # an origin not listed
        ("http://localhost:5174", "POST", "content-type"),  # another port is another origin
        ("null", "POST", "content-type"),  # a sandboxed frame or a file
        (BROWSER, "PUT", "content-type"),  # a method the endpoint does not serve
        (BROWSER, "POST", "authorization, x-forwarded-host"),  # a header it does not take
    ],
)
def test_a_preflight_outside_the_policy_is_refused(http: TestClient, origin: str, method: str, headers: str) -> None:
    response = _preflight(http, ENDPOINT, origin, method, headers)
    assert response.status_code == 400
    if origin != BROWSER:
        assert "access-control-allow-origin" not in response.headers


def test_an_options_that_is_no_preflight_is_the_endpoints_405(http: TestClient) -> None:
    response = http.options(ENDPOINT, headers={"origin": BROWSER})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST, DELETE"


def test_a_reply_to_an_allowed_origin_exposes_the_session_headers(http: TestClient) -> None:
    response = http.post(
        ENDPOINT, json={"jsonrpc": "2.0", "id": 1, "method": "initialize"}, headers={"origin": BROWSER}
    )
    assert response.status_code == 200
    assert response.headers["mcp-session-id"] == "s-1"
    assert response.headers["access-control-allow-origin"] == BROWSER
    assert _listed(response.headers["access-control-expose-headers"]) == {h.lower() for h in EXPOSED_HEADERS}
    assert "origin" in _listed(response.headers["vary"])


def test_a_challenge_to_an_allowed_origin_is_readable_and_names_the_metadata(http: TestClient) -> None:
    response = http.delete(ENDPOINT, headers={"origin": BROWSER, "mcp-session-id": "s-1"})
    assert response.status_code == 401  # past the Origin check: the CORS origin is an allowed Origin
    assert response.headers["www-authenticate"] == CHALLENGE
    assert response.headers["access-control-allow-origin"] == BROWSER
    assert "www-authenticate" in _listed(response.headers["access-control-expose-headers"])


def test_a_request_from_another_origin_is_refused_and_unreadable(http: TestClient) -> None:
    response = http.delete(ENDPOINT, headers={"origin": STRANGER, "mcp-session-id": "s-1"})
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


def test_without_configured_origins_the_endpoint_answers_no_browser() -> None:
    http, _ = _client()
    assert _preflight(http, ENDPOINT, BROWSER).status_code == 405
    response = http.delete(ENDPOINT, headers={"origin": BROWSER, "mcp-session-id": "s-1"})
    assert response.status_code == 403  # Bastion's own origins only, as before
    assert "access-control-allow-origin" not in response.headers


def test_every_origin_with_the_wildcard_and_never_credentials() -> None:
    http, _ = _client(allowed_origins=["*"])
    preflight = _preflight(http, ENDPOINT, STRANGER, "POST", "authorization")
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    response = http.delete(ENDPOINT, headers={"origin": STRANGER, "cookie": "a=b", "mcp-session-id": "s-1"})
    assert response.status_code == 401  # the Origin check admits every origin; the Host check stays
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    foreign_host = http.delete(ENDPOINT, headers={"origin": STRANGER, "host": "evil.example", "mcp-session-id": "1"})
    assert foreign_host.status_code == 403


def test_credentials_when_configured_name_the_origin() -> None:
    http, _ = _client(allowed_origins=[BROWSER], allow_credentials=True, max_age_s=60)
    preflight = _preflight(http, ENDPOINT, BROWSER, "POST", "authorization")
    assert preflight.headers["access-control-allow-origin"] == BROWSER
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert preflight.headers["access-control-max-age"] == "60"
    response = http.delete(ENDPOINT, headers={"origin": BROWSER, "mcp-session-id": "s-1"})
    assert response.headers["access-control-allow-origin"] == BROWSER
    assert response.headers["access-control-allow-credentials"] == "true"


# --- public documents -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [METADATA, "/.well-known/jwks.json"])
@pytest.mark.parametrize("origin", [BROWSER, STRANGER])
def test_metadata_and_keys_are_readable_from_every_origin(http: TestClient, path: str, origin: str) -> None:
    response = http.get(path, headers={"origin": origin, "mcp-protocol-version": "2025-11-25"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    document = response.json()
    assert document == JWKS if path.endswith("jwks.json") else document["resource"] == BASE + ENDPOINT
    preflight = _preflight(http, path, origin, "GET", "mcp-protocol-version")
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers


@pytest.mark.parametrize("path", [METADATA, "/.well-known/jwks.json"])
def test_public_documents_keep_their_methods(http: TestClient, path: str) -> None:
    assert http.options(path, headers={"origin": STRANGER}).status_code == 405
    assert http.post(path, headers={"origin": STRANGER}).status_code == 405
    assert _preflight(http, path, STRANGER, "POST").status_code == 400


def test_health_is_not_for_other_origins(http: TestClient) -> None:
    response = http.get("/healthz", headers={"origin": STRANGER})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers

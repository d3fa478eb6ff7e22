"""Transport checks of the MCP endpoint, probed with raw HTTP against a real ``bastion serve``.

Each probe carries a VALID token for the route, so a refusal can only come from
the transport check under test; where useful a well-formed control request
shows the same request passes once the defect is removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest
from tests.e2e.conftest import MAX_BODY, Gateway
from tests.support.e2e_helpers import (
    LEGACY_VERSION,
    MODERN,
    envelope,
    legacy_post,
    modern_post,
    open_session,
    raw_headers,
    reply_message,
    rpc,
)

pytestmark = pytest.mark.e2e

ROUTES = ("notes", "time")  # one HTTP upstream, one stdio upstream


@pytest.fixture(scope="module")
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=15.0) as client:
        yield client


def _error(response: httpx2.Response) -> dict[str, object]:
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    error = body["error"]
    assert isinstance(error, dict)
    assert "Traceback" not in json.dumps(body)
    return error


def _version_headers(mode: str) -> dict[str, str]:
    return {"mcp_protocol_version": LEGACY_VERSION if mode == "legacy" else MODERN}


def _list_request(mode: str, rpc_id: int = 1) -> dict[str, object]:
    return rpc("tools/list", {"_meta": envelope()} if mode == MODERN else {}, rpc_id=rpc_id)


@pytest.mark.parametrize("mode", ["legacy", MODERN])
@pytest.mark.parametrize("route", ROUTES)
def test_jsonrpc_batch_is_rejected(gateway: Gateway, http: httpx2.Client, route: str, mode: str) -> None:
    token = gateway.token("alice", route)
    batch = [_list_request(mode, 1), _list_request(mode, 2)]
    extra = _version_headers(mode) | ({"mcp_method": "tools/list"} if mode == MODERN else {})
    response = http.post(gateway.url(route), json=batch, headers=raw_headers(token, **extra))
    assert response.status_code == 400
    assert _error(response)["code"] == -32600


@pytest.mark.parametrize("route", ROUTES)
def test_malformed_json_is_a_parse_error(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    response = http.post(
        gateway.url(route),
        content=b'{"jsonrpc": "2.0", "id": 1, "method": ',
        headers=raw_headers(gateway.token("alice", route)),
    )
    assert response.status_code == 400
    assert _error(response)["code"] == -32700
    assert response.json()["id"] is None


def test_body_over_the_limit_is_413(gateway: Gateway, http: httpx2.Client) -> None:
    token = gateway.token("alice", "notes")
    big = rpc("tools/call", {"name": "add_note", "arguments": {"name": "big", "text": "x" * (MAX_BODY + 10)}})
    response = http.post(gateway.url("notes"), json=big, headers=raw_headers(token))
    assert response.status_code == 413
    assert _error(response)["code"] == -32600


def test_body_over_the_limit_without_content_length_is_413(gateway: Gateway, http: httpx2.Client) -> None:
    """A chunked body (no Content-Length) is cut off at the limit too."""
    token = gateway.token("alice", "notes")
    payload = json.dumps(rpc("tools/call", {"name": "add_note", "arguments": {"text": "y" * (MAX_BODY * 2)}}))

    def chunks() -> Iterator[bytes]:
        data = payload.encode()
        for start in range(0, len(data), 8192):
            yield data[start : start + 8192]

    response = http.post(gateway.url("notes"), content=chunks(), headers=raw_headers(token))
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


def test_body_just_under_the_limit_is_accepted(gateway: Gateway, http: httpx2.Client) -> None:
    token = gateway.token("alice", "notes")
    message = rpc("tools/list", {"_meta": envelope(), "pad": ""})
    filler = MAX_BODY - len(json.dumps(message).encode()) - 100
    message["params"]["pad"] = "z" * filler  # type: ignore[index]
    headers = raw_headers(token, mcp_protocol_version=MODERN, mcp_method="tools/list")
    response = http.post(gateway.url("notes"), json=message, headers=headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("route", ROUTES)
def test_foreign_origin_is_403(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    token = gateway.token("alice", route)
    url = gateway.url(route)
    extra = {"mcp_protocol_version": MODERN, "mcp_method": "tools/list"}
    bad = http.post(url, json=_list_request(MODERN), headers=raw_headers(token, origin="https://evil.example", **extra))
    assert bad.status_code == 403
    assert _error(bad)["code"] == -32600
    good = http.post(
        url, json=_list_request(MODERN), headers=raw_headers(token, origin=gateway.bastion.base_url, **extra)
    )
    assert good.status_code == 200, good.text


@pytest.mark.parametrize("route", ROUTES)
def test_foreign_host_is_refused(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    token = gateway.token("alice", route)
    extra = {"mcp_protocol_version": MODERN, "mcp_method": "tools/list"}
    response = http.post(
        gateway.url(route), json=_list_request(MODERN), headers=raw_headers(token, host="evil.example", **extra)
    )
    assert 400 <= response.status_code < 500
    assert "Host" in str(_error(response)["message"])


@pytest.mark.parametrize("route", ROUTES)
def test_unsupported_protocol_version_is_400(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    token = gateway.token("alice", route)
    response = http.post(
        gateway.url(route), json=_list_request("legacy"), headers=raw_headers(token, mcp_protocol_version="1999-01-01")
    )
    assert response.status_code == 400
    assert "1999-01-01" in str(_error(response)["message"])


@pytest.mark.parametrize("route", ROUTES)
def test_modern_request_with_matching_headers_passes(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    """The control for the mismatch tests: the same request, headers equal to the body."""
    token = gateway.token("alice", route)
    tool = {"notes": ("search_notes", {"query": "api"}), "time": ("get_current_time", {"timezone": "UTC"})}[route]
    response = modern_post(http, gateway.url(route), token, "tools/call", {"name": tool[0], "arguments": tool[1]})
    assert response.status_code == 200, response.text
    message = reply_message(response)
    assert "result" in message, message
    assert message["result"].get("isError") is not True


@pytest.mark.parametrize("route", ROUTES)
def test_modern_mcp_method_header_differing_from_body_is_32020(
    gateway: Gateway, http: httpx2.Client, route: str
) -> None:
    token = gateway.token("alice", route)
    response = modern_post(
        http, gateway.url(route), token, "tools/call", {"name": "anything", "arguments": {}}, mcp_method="tools/list"
    )
    assert response.status_code == 400
    assert _error(response)["code"] == -32020


@pytest.mark.parametrize("route", ROUTES)
def test_modern_mcp_name_header_differing_from_body_is_32020(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    """A client claiming one tool in the header and calling another in the body is refused."""
    token = gateway.token("bob", route)
    tool = {"notes": "delete_note", "time": "get_current_time"}[route]
    response = modern_post(
        http, gateway.url(route), token, "tools/call", {"name": tool, "arguments": {"name": "runbook"}},
        mcp_name="search_notes",
    )  # fmt: skip
    assert response.status_code == 400
    assert _error(response)["code"] == -32020


@pytest.mark.parametrize("route", ROUTES)
def test_get_without_a_session_is_refused(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    token = gateway.token("alice", route)
    response = http.get(gateway.url(route), headers={"accept": "text/event-stream", "authorization": f"Bearer {token}"})
    assert response.status_code in (400, 405)


@pytest.mark.parametrize("route", ROUTES)
def test_delete_ends_the_session(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    token = gateway.token("alice", route)
    url = gateway.url(route)
    session_id = open_session(http, url, token)
    before = legacy_post(http, url, token, session_id, rpc("tools/list", {}))
    assert before.status_code == 200
    assert "result" in reply_message(before)

    ended = http.delete(
        url,
        headers={"authorization": f"Bearer {token}", "mcp-session-id": session_id,
                 "mcp-protocol-version": LEGACY_VERSION},
    )  # fmt: skip
    assert ended.status_code in (200, 202, 204)

    after = legacy_post(http, url, token, session_id, rpc("tools/list", {}, rpc_id=2))
    assert after.status_code == 404
    again = http.delete(url, headers={"authorization": f"Bearer {token}", "mcp-session-id": session_id})
    assert again.status_code == 404


@pytest.mark.parametrize("route", ROUTES)
def test_modern_repeated_routing_header_is_32020(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    token = gateway.token("alice", route)
    headers = [*raw_headers(token, mcp_protocol_version=MODERN).items(), ("mcp-method", "tools/list")]
    headers.append(("mcp-method", "tools/list"))
    response = http.post(gateway.url(route), json=_list_request(MODERN), headers=headers)
    assert response.status_code == 400
    assert _error(response)["code"] == -32020


@pytest.mark.parametrize("route", ROUTES)
def test_modern_version_header_differing_from_envelope_is_refused(
    gateway: Gateway, http: httpx2.Client, route: str
) -> None:
    """The header says 2026-07-28, the body's envelope says something else."""
    token = gateway.token("alice", route)
    message = rpc("tools/list", {"_meta": envelope("2099-01-01")})
    headers = raw_headers(token, mcp_protocol_version=MODERN, mcp_method="tools/list")
    response = http.post(gateway.url(route), json=message, headers=headers)
    assert response.status_code == 400
    assert _error(response)["code"] == -32020

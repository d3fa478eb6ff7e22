"""Sessions (2025-11-25 protocol): a session belongs to the principal that opened it and
never stands in for authentication. Raw HTTP, so the session id can be replayed at will."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from tests.e2e.conftest import Gateway
from tests.support.e2e_helpers import legacy_post, open_session, reply_message, rpc

pytestmark = pytest.mark.e2e

ROUTES = ("notes", "time")  # the HTTP upstream maps sessions; the stdio one multiplexes them


@pytest.fixture(scope="module")
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=15.0) as client:
        yield client


@pytest.mark.parametrize("route", ROUTES)
def test_session_replayed_by_another_principal_is_unknown(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    url = gateway.url(route)
    alice, bob = gateway.token("alice", route), gateway.token("bob", route)
    session_id = open_session(http, url, alice)

    stolen = legacy_post(http, url, bob, session_id, rpc("tools/list", {}))
    assert stolen.status_code == 404
    assert "result" not in stolen.json()
    stolen_call = legacy_post(
        http, url, bob, session_id, rpc("tools/call", {"name": "search_notes", "arguments": {"query": "a"}}, rpc_id=2)
    )
    assert stolen_call.status_code == 404
    stolen_delete = http.delete(url, headers={"authorization": f"Bearer {bob}", "mcp-session-id": session_id})
    assert stolen_delete.status_code == 404

    # Alice's session is untouched by the attempts.
    own = legacy_post(http, url, alice, session_id, rpc("tools/list", {}, rpc_id=3))
    assert own.status_code == 200
    assert reply_message(own)["result"]["tools"]


@pytest.mark.parametrize("route", ROUTES)
def test_session_id_without_a_token_is_401(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    url = gateway.url(route)
    session_id = open_session(http, url, gateway.token("alice", route))
    response = legacy_post(http, url, None, session_id, rpc("tools/list", {}))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    stream = http.get(url, headers={"accept": "text/event-stream", "mcp-session-id": session_id})
    assert stream.status_code == 401
    assert stream.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    ended = http.delete(url, headers={"mcp-session-id": session_id})
    assert ended.status_code == 401
    assert ended.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    # The 401s did not end the session: alice can still use it.
    own = legacy_post(http, url, gateway.token("alice", route), session_id, rpc("tools/list", {}, rpc_id=9))
    assert own.status_code == 200


@pytest.mark.parametrize("route", ROUTES)
def test_unknown_session_id_is_404(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    token = gateway.token("alice", route)
    response = legacy_post(http, gateway.url(route), token, "0" * 32, rpc("tools/list", {}))
    assert response.status_code == 404


def test_session_is_bound_to_its_route(gateway: Gateway, http: httpx2.Client) -> None:
    """Alice's notes session is unknown on the time route, even to alice."""
    session_id = open_session(http, gateway.url("notes"), gateway.token("alice", "notes"))
    response = legacy_post(http, gateway.url("time"), gateway.token("alice", "time"), session_id, rpc("tools/list", {}))
    assert response.status_code == 404

"""Cross-origin access to the authorization server, as a browser MCP client uses it.

The metadata and the machine endpoints (token, revocation, registration) are readable from every
origin and never with credentials; the browser pages (authorize, sign-in, consent) are
navigations and answer no preflight and carry no CORS headers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from oauth_helpers import Served, served

from bastion.config import parse_config

ISSUER = "http://127.0.0.1:8123"
PAGE = "http://localhost:5173"  # a browser client's page; no server.cors entry is needed here


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Served]:
    (tmp_path / "p.cedar").write_text('@id("a") permit(principal, action, resource);')
    config = parse_config(
        {
            "data_dir": str(tmp_path / "data"),
            "server": {"port": 8123},
            "policy": {"files": ["p.cedar"]},
            "identity": {"authorization_server": {"dynamic_registration": True}},
            "routes": [
                {"name": "echo", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True, "allow": ["127.0.0.1"]}}
            ],
        },
        base_dir=tmp_path,
    )
    with served(config, tmp_path / "data") as harness:
        yield harness


def _preflight(h: Served, path: str, method: str, headers: str) -> dict[str, str]:
    response = h.http.options(
        path,
        headers={"origin": PAGE, "access-control-request-method": method, "access-control-request-headers": headers},
    )
    assert response.status_code == 200, (path, response.status_code, response.text)
    return dict(response.headers)


def _readable(headers: Mapping[str, str]) -> None:
    assert headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in headers


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
def test_authorization_server_metadata_is_readable_from_every_origin(h: Served, path: str) -> None:
    response = h.http.get(path, headers={"origin": PAGE, "mcp-protocol-version": "2025-11-25"})
    assert response.status_code == 200
    assert response.json()["issuer"] == ISSUER
    _readable(response.headers)
    _readable(_preflight(h, path, "GET", "mcp-protocol-version"))


def test_a_browser_client_registers_and_reads_the_answer(h: Served) -> None:
    _readable(_preflight(h, "/oauth/register", "POST", "content-type"))
    mark = h.mark()
    response = h.http.post(
        "/oauth/register",
        json={"redirect_uris": [PAGE + "/callback"], "token_endpoint_auth_method": "none"},
        headers={"origin": PAGE},
    )
    assert response.status_code == 201, response.text
    _readable(response.headers)
    assert [row.method for row in h.since(mark)] == ["oauth/register"]


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke"])
def test_token_and_revocation_answers_are_readable_errors_included(h: Served, path: str) -> None:
    _readable(_preflight(h, path, "POST", "authorization, content-type"))
    response = h.http.post(path, data={"grant_type": "authorization_code", "token": "x"}, headers={"origin": PAGE})
    assert response.status_code in (400, 401)
    assert "error" in response.json()
    _readable(response.headers)


def test_an_options_that_is_no_preflight_never_reaches_the_token_endpoint(h: Served) -> None:
    mark = h.mark()
    response = h.http.options("/oauth/token", headers={"origin": PAGE})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert h.since(mark) == []


@pytest.mark.parametrize(("path", "method"), [("/oauth/authorize", "GET"), ("/oauth/consent", "POST")])
def test_browser_pages_answer_no_preflight_and_no_cors_headers(h: Served, path: str, method: str) -> None:
    preflight = h.http.options(path, headers={"origin": PAGE, "access-control-request-method": method})
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    page = h.http.request(method, path, headers={"origin": PAGE})
    assert "access-control-allow-origin" not in page.headers

"""Identity: every bad bearer token is a 401 pointing at RFC 9728 metadata; the metadata
and JWKS documents are served; long-lived tokens are not minted; the client's
``Authorization`` header never reaches the upstream.

Raw HTTP probes with both request shapes: a 2025-11-25 ``initialize`` and a
stateless 2026-07-28 ``tools/list``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from tests.e2e.conftest import GROUPS, Gateway
from tests.support.e2e_helpers import (
    LEGACY,
    MODERN,
    PROTOCOLS,
    connect,
    initialize_params,
    jwt_header,
    jwt_payload,
    modern_post,
    raw_headers,
    reply_message,
    rpc,
)

pytestmark = pytest.mark.e2e

ROUTE = "notes"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=15.0) as client:
        yield client


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _send(http: httpx2.Client, gateway: Gateway, mode: str, token: str | None, route: str = ROUTE) -> httpx2.Response:
    url = gateway.url(route)
    if mode == LEGACY:
        return http.post(url, json=rpc("initialize", initialize_params()), headers=raw_headers(token))
    return modern_post(http, url, token, "tools/list", {})


def _metadata_url(gateway: Gateway, route: str = ROUTE) -> str:
    return f"{gateway.bastion.base_url}/.well-known/oauth-protected-resource/mcp/{route}"


def _assert_401(response: httpx2.Response, gateway: Gateway, *, invalid: bool = True) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith(f'Bearer resource_metadata="{_metadata_url(gateway)}"'), challenge
    assert ('error="invalid_token"' in challenge) == invalid
    body = response.json()
    assert "result" not in body
    assert body["error"]["code"] == -32001


def _unsigned(gateway: Gateway) -> str:
    valid = gateway.token("alice", ROUTE)
    header = {**jwt_header(valid), "alg": "none"}
    return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(jwt_payload(valid)).encode())}."


def _foreign_signature(gateway: Gateway) -> str:
    """Alice's exact claims and Bastion's kid, signed with a key Bastion never issued."""
    valid = gateway.token("alice", ROUTE)
    key = ECKey.generate_key("P-256")
    return jwt.encode(jwt_header(valid), jwt_payload(valid), key, algorithms=["ES256"])


def _expired(gateway: Gateway) -> str:
    token = gateway.bastion.mint("alice", ROUTE, *GROUPS["alice"], ttl="1s")
    wait = jwt_payload(token)["exp"] + 1.2 - time.time()
    if wait > 0:
        time.sleep(wait)
    return token


BAD_TOKENS: dict[str, Callable[[Gateway], str]] = {
    "garbage": lambda _: "not-a-jwt-at-all",
    "garbage-three-parts": lambda _: "eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
    "alg-none": _unsigned,
    "other-key": _foreign_signature,
    "expired": _expired,
    "wrong-audience": lambda g: g.token("alice", "time"),
}


@pytest.mark.parametrize("mode", PROTOCOLS)
def test_control_valid_token_is_accepted(gateway: Gateway, http: httpx2.Client, mode: str) -> None:
    response = _send(http, gateway, mode, gateway.token("alice", ROUTE))
    assert response.status_code == 200, response.text
    assert "result" in reply_message(response)


@pytest.mark.parametrize("mode", PROTOCOLS)
def test_no_token_is_401_with_resource_metadata(gateway: Gateway, http: httpx2.Client, mode: str) -> None:
    _assert_401(_send(http, gateway, mode, None), gateway, invalid=False)


@pytest.mark.parametrize("mode", PROTOCOLS)
def test_non_bearer_scheme_is_401(gateway: Gateway, http: httpx2.Client, mode: str) -> None:
    headers = raw_headers(authorization="Basic YWxpY2U6cGFzc3dvcmQ=")
    if mode == MODERN:
        response = modern_post(http, gateway.url(ROUTE), None, "tools/list", {}, authorization=headers["authorization"])
    else:
        response = http.post(gateway.url(ROUTE), json=rpc("initialize", initialize_params()), headers=headers)
    _assert_401(response, gateway, invalid=False)


@pytest.mark.parametrize("mode", PROTOCOLS)
@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_token_is_401_with_resource_metadata(gateway: Gateway, http: httpx2.Client, kind: str, mode: str) -> None:
    _assert_401(_send(http, gateway, mode, BAD_TOKENS[kind](gateway)), gateway)


def test_revoked_token_is_refused_by_the_running_gateway(gateway: Gateway, http: httpx2.Client) -> None:
    token = gateway.bastion.mint("alice", ROUTE, *GROUPS["alice"])
    for mode in PROTOCOLS:  # used (and so verified, perhaps cached) before the revocation
        assert _send(http, gateway, mode, token).status_code == 200
    jti = jwt_payload(token)["jti"]
    revoked = gateway.bastion.cli("token", "revoke", jti, "--config", str(gateway.bastion.config_path))
    assert jti in revoked.stdout
    for mode in PROTOCOLS:
        _assert_401(_send(http, gateway, mode, token), gateway)
    # Only that token: another of alice's tokens still works.
    assert _send(http, gateway, MODERN, gateway.token("alice", ROUTE)).status_code == 200


@pytest.mark.parametrize("route", ["notes", "time", "git", "envdump"])
def test_protected_resource_metadata_names_the_route(gateway: Gateway, http: httpx2.Client, route: str) -> None:
    response = http.get(_metadata_url(gateway, route))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    metadata = response.json()
    assert metadata["resource"] == gateway.url(route)
    assert metadata["authorization_servers"] == [gateway.bastion.base_url]
    assert metadata["bearer_methods_supported"] == ["header"]


def test_challenge_metadata_url_is_served(gateway: Gateway, http: httpx2.Client) -> None:
    challenge = _send(http, gateway, MODERN, None).headers["www-authenticate"]
    url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
    assert http.get(url).json()["resource"] == gateway.url(ROUTE)


def test_jwks_serves_public_keys_only_and_verifies_minted_tokens(gateway: Gateway, http: httpx2.Client) -> None:
    response = http.get(f"{gateway.bastion.base_url}/.well-known/jwks.json")
    assert response.status_code == 200
    jwks = response.json()
    assert jwks["keys"]
    for key in jwks["keys"]:
        assert key["kty"] == "EC"
        assert {"x", "y", "crv", "kid"} <= set(key)
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key), key
    token = gateway.token("bob", ROUTE)
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    assert decoded.claims["sub"] == "bob"
    assert decoded.claims["aud"] == gateway.url(ROUTE)
    assert decoded.header["typ"].lower() == "at+jwt"


def test_mint_refuses_a_long_lived_token(gateway: Gateway) -> None:
    config = str(gateway.bastion.config_path)
    result = gateway.bastion.cli("token", "mint", "--config", config, "--sub", "alice", "--route", ROUTE,
                                 "--ttl", "48h", check=False)  # fmt: skip
    assert result.returncode != 0
    assert not result.stdout.strip().startswith("eyJ")
    assert "Traceback" not in result.stderr
    assert "refused" in result.stderr or "lifetime" in result.stderr


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_client_authorization_never_reaches_the_upstream(gateway: Gateway, mode: str) -> None:
    async with httpx2.AsyncClient(timeout=10) as plain:
        before = len((await plain.get(gateway.notes_debug)).json())
        token = gateway.token("alice", ROUTE)
        async with connect(gateway.url(ROUTE), token, mode) as client:
            await client.list_tools()
            result = await client.call_tool("read_logs", {"env": "dev"})
        assert not result.is_error
        seen = (await plain.get(gateway.notes_debug)).json()
    assert len(seen) > before or len(seen) == 200  # our requests reached the upstream (ring of 200)
    for headers in seen:
        assert "authorization" not in {k.lower() for k in headers}, headers
        assert not any(token in str(v) for v in headers.values())
        assert not any("Bearer" in str(v) for v in headers.values())

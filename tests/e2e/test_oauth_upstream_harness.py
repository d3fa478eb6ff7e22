"""The fixtures for upstream MCP servers that need their own OAuth are real, working processes.

``oidc-provider`` (``tests/support/oidc_provider``) runs with a resource server (RFC 8707), refresh
tokens, revocation (RFC 7009), introspection (RFC 7662) and open dynamic registration (RFC 7591);
the MCP server of ``tests/support/oauth_upstream_server`` is its resource server. They are driven
the way Bastion's credential plane will drive them: a scripted browser (httpx2) through the
authorization code flow with PKCE and ``resource``, plain token, revocation and registration
requests, and the official ``mcp`` SDK client calling the upstream with the access token.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from tests.support.bastion_process import free_port
from tests.support.e2e_helpers import (
    LEGACY,
    MODERN,
    connect,
    initialize_params,
    legacy_post,
    open_session,
    raw_headers,
    reply_message,
    rpc,
)
from tests.support.oauth_upstream_server import OAuthUpstreamServer, resource_for
from tests.support.oidc_provider import OIDCAccount, OIDCClient, OIDCProvider, OIDCResourceServer
from tests.support.pki import make_pki

pytestmark = pytest.mark.e2e

DANA = OIDCAccount("dana", "dana's passphrase", "dana@example.com", "Dana Scully")
ERIN = OIDCAccount("erin", "erin's passphrase", "erin@example.com", "Erin Reagan")
CALLBACK = "http://127.0.0.1:53682/callback"
#: Bastion as a public client of the upstream's authorization server.
BASTION = OIDCClient("bastion-credentials", (CALLBACK,), grant_types=("authorization_code", "refresh_token"))
#: A confidential client without the refresh_token grant.
NO_REFRESH = OIDCClient("no-refresh", (CALLBACK,), "no-refresh secret")
#: The upstream MCP server, authenticating to the introspection endpoint.
UPSTREAM = OIDCClient("notes-upstream", (), "upstream introspection secret", grant_types=())
SCOPES = ("notes:read", "notes:write")
OTHER_RESOURCE = "http://127.0.0.1:9/other-mcp"  # another resource server of the same provider
JWT_RESOURCE = "http://127.0.0.1:9/jwt-mcp"
#: oidc-provider's endpoints (the first test checks them against its metadata).
AUTHORIZE, TOKEN, REVOKE, INTROSPECT, REGISTER = "/auth", "/token", "/token/revocation", "/token/introspection", "/reg"


def https_client(provider: OIDCProvider) -> httpx2.Client:
    """A fresh "browser": its own cookie jar, trusting the test CA, redirects followed by hand."""
    return httpx2.Client(verify=ssl.create_default_context(cafile=provider.pki.ca_file), timeout=30.0)


@dataclass
class Setup:
    provider: OIDCProvider
    upstream: OAuthUpstreamServer

    def metadata(self) -> dict[str, Any]:
        """The provider's RFC 8414 authorization server metadata."""
        with https_client(self.provider) as http:
            response = http.get(f"{self.provider.issuer}/.well-known/oauth-authorization-server")
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("oauth-upstream")
    pki = make_pki(workdir)
    port = free_port()
    resource_servers = {
        resource_for(port): OIDCResourceServer(SCOPES, access_token_ttl=60),
        OTHER_RESOURCE: OIDCResourceServer(SCOPES),
        JWT_RESOURCE: OIDCResourceServer(SCOPES, access_token_format="jwt"),
    }
    provider = OIDCProvider(
        workdir,
        pki,
        accounts=[DANA, ERIN],
        clients=[BASTION, NO_REFRESH, UPSTREAM],
        resource_servers=resource_servers,
        refresh_tokens=True,
        revocation=True,
        introspection=True,
        registration=True,
    )
    upstream = OAuthUpstreamServer(
        workdir,
        issuer=provider.issuer,
        ca_file=pki.ca_file,
        introspection_client_id=UPSTREAM.client_id,
        introspection_client_secret=UPSTREAM.client_secret or "",
        required_scopes=("notes:read",),
        port=port,
    )
    with provider, upstream:
        yield Setup(provider, upstream)


# --- the OAuth client side, scripted --------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def follow(http: httpx2.Client, response: httpx2.Response, redirect_uri: str) -> httpx2.Response | str:
    """Follow redirects until a page, or until the redirect to ``redirect_uri`` (returned, not fetched)."""
    for _ in range(10):
        if not response.is_redirect:
            return response
        location = urljoin(str(response.url), response.headers["location"])
        if location.startswith(redirect_uri):
            return location
        response = http.get(location)
    raise AssertionError("too many redirects")


def authorize(
    provider: OIDCProvider, client: OIDCClient, account: OIDCAccount, scope: str, resource: str | None
) -> tuple[dict[str, str], str]:
    """Sign in (a fresh browser) and come back to the client: the callback's query, and the PKCE verifier."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uris[0],
        "scope": scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if resource is not None:
        params["resource"] = resource
    with https_client(provider) as http:
        page = follow(http, http.get(f"{provider.issuer}{AUTHORIZE}", params=params), client.redirect_uris[0])
        if isinstance(page, httpx2.Response):
            match = re.search(r'<form method="POST" action="([^"]+)"', page.text)
            assert match is not None, page.text
            form = {"login": account.login, "password": account.password}
            signed_in = http.post(urljoin(str(page.url), unescape(match.group(1))), data=form)
            page = follow(http, signed_in, client.redirect_uris[0])
    assert isinstance(page, str), f"expected a redirect to the client, got {page}"
    query = {key: values[0] for key, values in parse_qs(urlsplit(page).query).items()}
    assert query["state"] == state
    assert query["iss"] == provider.issuer
    return query, verifier


def token_request(provider: OIDCProvider, client: OIDCClient, endpoint: str, data: dict[str, str]) -> httpx2.Response:
    """POST to a token, revocation or introspection endpoint as ``client`` (HTTP Basic when it has a secret)."""
    with https_client(provider) as http:
        url = f"{provider.issuer}{endpoint}"
        if client.client_secret is None:
            return http.post(url, data={**data, "client_id": client.client_id})
        return http.post(url, data=data, auth=httpx2.BasicAuth(client.client_id, client.client_secret))


def obtain(
    provider: OIDCProvider,
    client: OIDCClient,
    account: OIDCAccount,
    *,
    resource: str | None,
    scope: str = "notes:read",
    token_resource: str | None = None,
) -> httpx2.Response:
    """The whole code flow: sign in with PKCE (and ``resource``), then redeem the code."""
    query, verifier = authorize(provider, client, account, scope, resource)
    assert "code" in query, query
    data = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "redirect_uri": client.redirect_uris[0],
        "code_verifier": verifier,
    }
    if token_resource is not None:
        data["resource"] = token_resource
    return token_request(provider, client, TOKEN, data)


def tokens_for(setup: Setup, account: OIDCAccount, client: OIDCClient = BASTION, **kwargs: Any) -> dict[str, Any]:
    response = obtain(setup.provider, client, account, resource=setup.upstream.resource, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refresh(provider: OIDCProvider, refresh_token: str, client: OIDCClient = BASTION) -> httpx2.Response:
    return token_request(provider, client, TOKEN, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def revoke(provider: OIDCProvider, token: str, client: OIDCClient = BASTION) -> None:
    response = token_request(provider, client, REVOKE, {"token": token})
    assert response.status_code == 200, response.text


# --- the upstream side ------------------------------------------------------------------------


async def whoami(setup: Setup, token: str, mode: str = MODERN) -> dict[str, Any]:
    """Call the upstream's ``whoami`` with the official SDK client, ``Authorization: Bearer token``."""
    async with connect(setup.upstream.url, token, mode) as client:
        result = await client.call_tool("whoami", {})
    assert result.is_error is False, result
    seen: dict[str, Any] = result.structured_content or {}
    return seen


def initialize(setup: Setup, token: str | None) -> httpx2.Response:
    """A raw ``initialize`` POST to the upstream (to see refusals as they are on the wire)."""
    with httpx2.Client(timeout=30.0) as http:
        return http.post(setup.upstream.url, json=rpc("initialize", initialize_params()), headers=raw_headers(token))


def authorizations(setup: Setup, path: str = "/mcp") -> list[Sequence[str]]:
    """The ``Authorization`` headers of every request the upstream received on ``path``, in order."""
    return [request.header("authorization") for request in setup.upstream.requests() if request.path == path]


def events(setup: Setup, grant_id: str | None = None) -> list[tuple[str, str | None, str | None, str | None]]:
    """``(event, client_id, account_id, grant_type)`` of the provider's events (of one grant if given)."""
    return [
        (e["event"], e["client_id"], e["account_id"], e["grant_type"])
        for e in setup.provider.events()
        if grant_id is None or e["grant_id"] == grant_id
    ]


def latest_grant_id(setup: Setup) -> str:
    """The grant id of the provider's newest ``grant.success`` (the tests run one at a time)."""
    successes = [e for e in setup.provider.events() if e["event"] == "grant.success"]
    assert successes, "no grant.success event"
    grant_id: str = successes[-1]["grant_id"]
    return grant_id


# --- tests --------------------------------------------------------------------------------------


def test_without_a_token_the_upstream_names_its_authorization_server(setup: Setup) -> None:
    refused = initialize(setup, None)
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{setup.upstream.resource_metadata_url}"' in challenge
    assert setup.upstream.resource_metadata_url.startswith(f"http://127.0.0.1:{setup.upstream.port}/.well-known/")

    with httpx2.Client(timeout=30.0) as http:
        document = http.get(setup.upstream.resource_metadata_url).json()
    assert document["resource"] == setup.upstream.resource == setup.upstream.url
    assert document["authorization_servers"] == [setup.provider.issuer]
    assert document["scopes_supported"] == ["notes:read"]

    metadata = setup.metadata()  # RFC 8414, as an MCP client discovers it
    issuer = setup.provider.issuer
    assert metadata["issuer"] == issuer
    endpoints = {
        "authorization_endpoint": AUTHORIZE,
        "token_endpoint": TOKEN,
        "revocation_endpoint": REVOKE,
        "introspection_endpoint": INTROSPECT,
        "registration_endpoint": REGISTER,
    }
    assert {key: metadata[key] for key in endpoints} == {key: f"{issuer}{path}" for key, path in endpoints.items()}
    assert {"authorization_code", "refresh_token"} <= set(metadata["grant_types_supported"])

    # The refused request was recorded (before authentication), without an Authorization header.
    assert [] in authorizations(setup)


async def test_code_flow_with_pkce_and_resource_gives_a_token_the_upstream_accepts(setup: Setup) -> None:
    tokens = tokens_for(setup, DANA)
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "notes:read"
    assert tokens["expires_in"] == 60  # the resource server's access_token_ttl
    assert "refresh_token" in tokens

    assert initialize(setup, tokens["access_token"]).status_code == 200
    assert await whoami(setup, tokens["access_token"]) == {
        "sub": "dana",
        "client_id": BASTION.client_id,
        "scope": "notes:read",
        "resource": setup.upstream.resource,
    }
    assert [f"Bearer {tokens['access_token']}"] in authorizations(setup)

    erin = tokens_for(setup, ERIN, scope="notes:read notes:write")
    seen = await whoami(setup, erin["access_token"], LEGACY)  # the 2025-11-25 session protocol too
    assert (seen["sub"], seen["scope"]) == ("erin", "notes:read notes:write")
    async with connect(setup.upstream.url, erin["access_token"], MODERN) as client:
        echoed = await client.call_tool("echo", {"text": "through the upstream"})
    assert echoed.structured_content == {"result": "through the upstream"}

    grant = latest_grant_id(setup)
    assert events(setup, grant) == [("grant.success", BASTION.client_id, "erin", "authorization_code")]


async def test_refresh_gives_a_new_access_token_and_rotates_the_refresh_token(setup: Setup) -> None:
    tokens = tokens_for(setup, DANA)
    grant = latest_grant_id(setup)

    refreshed = refresh(setup.provider, tokens["refresh_token"])  # no `resource`: the granted one is used
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    assert body["access_token"] != tokens["access_token"]
    assert body["refresh_token"] != tokens["refresh_token"]  # rotation (the default)
    assert body["scope"] == "notes:read"
    assert (await whoami(setup, body["access_token"]))["sub"] == "dana"
    assert events(setup, grant) == [
        ("grant.success", BASTION.client_id, "dana", "authorization_code"),
        ("refresh_token.consumed", BASTION.client_id, "dana", None),
        ("grant.success", BASTION.client_id, "dana", "refresh_token"),
    ]

    # Re-using a rotated refresh token is refused and revokes the whole grant.
    reused = refresh(setup.provider, tokens["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert refresh(setup.provider, body["refresh_token"]).json()["error"] == "invalid_grant"
    assert initialize(setup, body["access_token"]).status_code == 401
    assert ("grant.revoked", BASTION.client_id, "dana", None) in events(setup, grant)


def test_each_request_is_seen_with_its_own_token_on_one_mcp_session(setup: Setup) -> None:
    """A refreshed token can carry on the session opened with the previous one (same principal)."""
    tokens = tokens_for(setup, DANA, scope="notes:read notes:write")
    narrowed = token_request(
        setup.provider,
        BASTION,
        TOKEN,
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": "notes:read"},
    )  # RFC 6749 section 6: a narrower scope
    assert narrowed.status_code == 200, narrowed.text
    with httpx2.Client(timeout=30.0) as http:
        session = open_session(http, setup.upstream.url, tokens["access_token"])
        seen: list[str] = []
        for token in (tokens["access_token"], narrowed.json()["access_token"]):
            call = rpc("tools/call", {"name": "whoami", "arguments": {}}, rpc_id=len(seen) + 2)
            reply = reply_message(legacy_post(http, setup.upstream.url, token, session, call))
            seen.append(reply["result"]["structuredContent"]["scope"])
    assert seen == ["notes:read notes:write", "notes:read"]


async def test_a_revoked_access_token_is_refused_at_once(setup: Setup) -> None:
    tokens = tokens_for(setup, DANA)
    grant = latest_grant_id(setup)
    assert initialize(setup, tokens["access_token"]).status_code == 200

    revoke(setup.provider, tokens["access_token"])
    refused = initialize(setup, tokens["access_token"])
    assert refused.status_code == 401
    assert "resource_metadata=" in refused.headers["www-authenticate"]
    assert ("access_token.destroyed", BASTION.client_id, "dana", None) in events(setup, grant)
    # oidc-provider also deletes every other token of the grant, the refresh token included.
    assert refresh(setup.provider, tokens["refresh_token"]).json()["error"] == "invalid_grant"


async def test_revoking_the_refresh_token_revokes_the_grant(setup: Setup) -> None:
    tokens = tokens_for(setup, ERIN)
    grant = latest_grant_id(setup)
    revoke(setup.provider, tokens["refresh_token"])
    assert initialize(setup, tokens["access_token"]).status_code == 401
    assert events(setup, grant)[-2:] == [
        ("refresh_token.destroyed", BASTION.client_id, "erin", None),
        ("grant.revoked", BASTION.client_id, "erin", None),
    ]


def test_the_upstream_refuses_tokens_not_meant_for_it(setup: Setup) -> None:
    other = obtain(setup.provider, BASTION, DANA, resource=OTHER_RESOURCE).json()
    assert other["scope"] == "notes:read"
    assert initialize(setup, other["access_token"]).status_code == 401  # another audience

    ours = tokens_for(setup, DANA)
    assert initialize(setup, ours["access_token"]).status_code == 200
    assert initialize(setup, ours["refresh_token"]).status_code == 401  # active at introspection, not Bearer

    write_only = tokens_for(setup, DANA, scope="notes:write")
    assert write_only["scope"] == "notes:write"
    refused = initialize(setup, write_only["access_token"])
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]

    userinfo_only = obtain(setup.provider, BASTION, DANA, resource=None, scope="openid").json()
    assert "access_token" in userinfo_only
    assert initialize(setup, userinfo_only["access_token"]).status_code == 401  # no audience at all
    assert initialize(setup, "not-a-token").status_code == 401


def test_resource_indicators_at_the_authorization_and_token_endpoints(setup: Setup) -> None:
    query, _ = authorize(setup.provider, BASTION, DANA, "notes:read", "http://127.0.0.1:9/unknown")
    assert query["error"] == "invalid_target"
    assert "code" not in query

    not_granted = obtain(setup.provider, BASTION, DANA, resource=setup.upstream.resource, token_resource=OTHER_RESOURCE)
    assert not_granted.status_code == 400
    assert not_granted.json()["error"] == "invalid_target"

    explicit = obtain(
        setup.provider, BASTION, DANA, resource=setup.upstream.resource, token_resource=setup.upstream.resource
    )
    assert explicit.status_code == 200, explicit.text
    assert initialize(setup, explicit.json()["access_token"]).status_code == 200


def test_a_jwt_resource_server_gets_rfc_9068_access_tokens(setup: Setup) -> None:
    response = obtain(setup.provider, NO_REFRESH, ERIN, resource=JWT_RESOURCE, scope="notes:read notes:write")
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body  # the client may not use the refresh_token grant

    with https_client(setup.provider) as http:
        keys = KeySet.import_key_set(http.get(setup.metadata()["jwks_uri"]).json())
    token = jwt.decode(body["access_token"], keys, algorithms=["RS256"])
    assert token.header["typ"] == "at+jwt"
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": setup.provider.issuer},
        aud={"essential": True, "value": JWT_RESOURCE},
        sub={"essential": True, "value": "erin"},
        client_id={"essential": True, "value": NO_REFRESH.client_id},
        scope={"essential": True, "value": "notes:read notes:write"},
        exp={"essential": True},
    ).validate(token.claims)

    introspected = token_request(setup.provider, UPSTREAM, INTROSPECT, {"token": body["access_token"]})
    assert introspected.status_code == 400
    assert introspected.json()["error"] == "unsupported_token_type"


async def test_dynamically_registered_clients(setup: Setup) -> None:
    registration = f"{setup.provider.issuer}{REGISTER}"
    metadata = {
        "redirect_uris": [CALLBACK],
        "grant_types": ["authorization_code", "refresh_token"],
        "client_name": "Bastion credential plane",
    }
    with https_client(setup.provider) as http:
        public = http.post(registration, json={**metadata, "token_endpoint_auth_method": "none"})
        confidential = http.post(registration, json=metadata)
    assert public.status_code == 201, public.text
    assert confidential.status_code == 201, confidential.text
    assert "client_secret" not in public.json()
    assert confidential.json()["token_endpoint_auth_method"] == "client_secret_basic"

    for registered in (public.json(), confidential.json()):
        client = OIDCClient(registered["client_id"], (CALLBACK,), registered.get("client_secret"))
        tokens = tokens_for(setup, DANA, client=client)
        assert (await whoami(setup, tokens["access_token"]))["client_id"] == client.client_id
        assert refresh(setup.provider, tokens["refresh_token"], client).status_code == 200
        assert ("registration_create.success", client.client_id, None, None) in events(setup)

    with https_client(setup.provider) as http:
        no_redirect = http.post(registration, json={"grant_types": ["authorization_code"]})
    assert no_redirect.status_code == 400
    assert no_redirect.json()["error"] == "invalid_redirect_uri"


def test_without_rotation_the_refresh_response_repeats_the_refresh_token(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    clients = [BASTION]
    with OIDCProvider(
        tmp_path, pki, accounts=[DANA], clients=clients, refresh_tokens=True, rotate_refresh_tokens=False
    ) as provider:
        response = obtain(provider, BASTION, DANA, resource=None, scope="openid")
        assert response.status_code == 200, response.text
        tokens = response.json()
        first = refresh(provider, tokens["refresh_token"])
        second = refresh(provider, tokens["refresh_token"])
        assert first.status_code == second.status_code == 200
        assert first.json()["refresh_token"] == second.json()["refresh_token"] == tokens["refresh_token"]
        assert first.json()["access_token"] != second.json()["access_token"]
        assert [e["event"] for e in provider.events()] == ["grant.success"] * 3  # nothing consumed

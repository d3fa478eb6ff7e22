"""The authorization server end to end: a real ``bastion serve``, the demo notes server, the ``mcp``
SDK client with its ``OAuthClientProvider``, and a person signing in and consenting through
Bastion's real pages (scripted over HTTP by ``tests.support.oauth_user``).

The SDK discovers everything itself: the 401 challenge, the protected resource metadata,
the authorization server metadata, then registers (dynamic registration) or uses a
pre-registered client id, runs the code flow with PKCE and the ``resource`` parameter,
and calls tools with the token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess, notes_server, write_users_file
from tests.support.e2e_helpers import LEGACY, MODERN, initialize_params, jwt_payload

from bastion.demo.browser import query_of
from bastion.demo.sign_in import CALLBACK, MemoryTokenStorage, ScriptedSignIn, oauth_http_client

pytestmark = pytest.mark.e2e

PASSWORDS = {"alice": "correct horse alice", "bob": "battery staple bob"}
GROUPS = {"alice": ["engineering"], "bob": ["support"]}
STEP_UP_POLICY = """
@id("delete-needs-write-scope")
@scope("notes:write")
forbid (principal, action == Action::"tools/call", resource == Tool::"notes/delete_note")
unless { context.scopes.contains("notes:write") };
"""
REGISTERED = "e2e-registered-client"


async def call_through(url: str, person: ScriptedSignIn, storage: MemoryTokenStorage, mode: str) -> dict[str, Any]:
    """Connect with OAuth, list tools, call ``search_notes``; return what was seen."""
    async with (
        oauth_http_client(url, person, storage) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        tools = sorted(tool.name for tool in (await client.list_tools()).tools)
        result = await client.call_tool("search_notes", {"query": "welcome"})
    return {"tools": tools, "result": result}


@pytest.fixture(scope="module")
def oauth_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    workdir = tmp_path_factory.mktemp("oauth")
    users_file = write_users_file(workdir, {name: (PASSWORDS[name], GROUPS[name]) for name in PASSWORDS})
    (workdir / "step_up.cedar").write_text(STEP_UP_POLICY, encoding="utf-8")
    with notes_server() as notes_url:
        config = {
            "policy": {"files": [str(DEMO_CEDAR), str(workdir / "step_up.cedar")]},
            "identity": {
                "authorization_server": {
                    "users_file": users_file,
                    "scopes": ["mcp", "notes:write"],
                    "default_scopes": ["mcp"],
                    "dynamic_registration": True,
                    "clients": [{"client_id": REGISTERED, "client_name": "Registered", "redirect_uris": [CALLBACK]}],
                    "refresh_reuse_grace": "1s",
                }
            },
            "routes": [
                {
                    "name": "notes",
                    "title": "Team notes",
                    "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]},
                    "trust_annotations": True,  # the demo notes server: its annotations give the risk
                },
                {"name": "other", "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]}},
            ],
        }
        with BastionProcess(workdir, config) as bastion:
            yield bastion


@pytest.mark.parametrize("mode", [LEGACY, MODERN])
async def test_sdk_client_registers_dynamically_signs_in_and_calls_a_tool(
    oauth_gateway: BastionProcess, mode: str
) -> None:
    url = oauth_gateway.url("notes")
    person, storage = ScriptedSignIn("bob", PASSWORDS["bob"]), MemoryTokenStorage()
    seen = await call_through(url, person, storage, mode)

    assert storage.client_info is not None
    assert storage.client_info.client_id.startswith("dcr-")
    assert "search_notes" in seen["tools"]
    assert "delete_note" not in seen["tools"]  # bob is in support
    assert seen["result"].is_error is False
    authorize = query_of(person.authorization_urls[0])
    assert authorize["resource"] == url
    assert authorize["code_challenge_method"] == "S256"
    assert storage.tokens is not None
    claims = jwt_payload(storage.tokens.access_token)
    assert (claims["aud"], claims["sub"], claims["groups"]) == (url, "bob", ["support"])
    assert claims["client_id"] == storage.client_info.client_id
    pages = [page.text for page in person.user.pages if page.status_code == 200]
    consent = [page for page in pages if "Team notes" in page]
    assert consent, "the consent page names the route"
    assert "127.0.0.1:53682" in consent[0], "the consent page names the redirect host"


async def test_pre_registered_client_and_remembered_consent(oauth_gateway: BastionProcess) -> None:
    url = oauth_gateway.url("notes")
    registered = OAuthClientInformationFull(
        client_id=REGISTERED, redirect_uris=[CALLBACK], token_endpoint_auth_method="none"
    )
    person = ScriptedSignIn("alice", PASSWORDS["alice"])
    first = await call_through(url, person, MemoryTokenStorage(registered), LEGACY)
    assert "delete_note" in first["tools"]  # alice is in engineering
    # The same browser again: signed in and consent remembered, so no page at all.
    person.user.pages.clear()
    await call_through(url, person, MemoryTokenStorage(registered), LEGACY)
    assert [page.status_code for page in person.user.pages] == [303]
    assert ("allow", None, REGISTERED) in oauth_gateway.audit_rows("oauth/token")


async def test_step_up_a_policy_asks_for_more_scope_and_the_sdk_gets_it(oauth_gateway: BastionProcess) -> None:
    url = oauth_gateway.url("notes")
    person, storage = ScriptedSignIn("alice", PASSWORDS["alice"]), MemoryTokenStorage()
    async with (
        oauth_http_client(url, person, storage) as http,
        Client(streamable_http_client(url, http_client=http), mode=LEGACY) as client,
    ):
        assert storage.tokens is not None
        assert storage.tokens.scope == "mcp"  # the 401 challenge asked for the default scope only
        result = await client.call_tool("delete_note", {"name": "scratch"})
    # delete_note answered 403 insufficient_scope; the SDK authorized again for "mcp notes:write"
    # (a second consent, since the remembered one covers less) and retried the call.
    assert len(person.authorization_urls) == 2
    assert query_of(person.authorization_urls[1])["scope"] == "mcp notes:write"
    assert storage.tokens.scope == "mcp notes:write"
    assert jwt_payload(storage.tokens.access_token)["scope"] == "mcp notes:write"
    assert result.is_error is False


async def test_denied_consent_gives_the_client_nothing(oauth_gateway: BastionProcess) -> None:
    url = oauth_gateway.url("notes")
    person = ScriptedSignIn("bob", PASSWORDS["bob"], decision="deny")
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the SDK wraps the callback's error
        await call_through(url, person, MemoryTokenStorage(), LEGACY)
    assert "access_denied" in repr(raised.value) or "access_denied" in str(person.redirected_to)
    assert query_of(person.redirected_to or "")["error"] == "access_denied"
    assert any(row[:2] == ("deny", "access_denied") for row in oauth_gateway.audit_rows("oauth/consent"))


async def test_token_for_one_route_is_refused_on_another(oauth_gateway: BastionProcess) -> None:
    storage = MemoryTokenStorage()
    await call_through(oauth_gateway.url("notes"), ScriptedSignIn("bob", PASSWORDS["bob"]), storage, LEGACY)
    assert storage.tokens is not None
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            oauth_gateway.url("other"),
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={
                "authorization": f"Bearer {storage.tokens.access_token}",
                "accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2025-11-25",
            },
        )
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert "/.well-known/oauth-protected-resource/mcp/other" in challenge


async def test_refresh_rotation_and_reuse_revokes_the_family(oauth_gateway: BastionProcess) -> None:
    url = oauth_gateway.url("notes")
    storage = MemoryTokenStorage()
    await call_through(url, ScriptedSignIn("bob", PASSWORDS["bob"]), storage, LEGACY)
    assert storage.tokens is not None
    assert storage.tokens.refresh_token
    assert storage.client_info is not None
    client_id, first_refresh = storage.client_info.client_id, storage.tokens.refresh_token
    token_url = f"{oauth_gateway.base_url}/oauth/token"
    form = {"grant_type": "refresh_token", "client_id": client_id}
    async with httpx2.AsyncClient() as http:
        rotated = await http.post(token_url, data={**form, "refresh_token": first_refresh})
        assert rotated.status_code == 200, rotated.text
        fresh = rotated.json()
        assert fresh["refresh_token"] != first_refresh
        assert jwt_payload(fresh["access_token"])["aud"] == url

        async def ping(token: str) -> int:
            response = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params()},
                headers={"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"},
            )
            return response.status_code

        # The fresh token works, then the old refresh token is replayed after the grace
        # window: the whole family is revoked, the fresh access token included.
        assert await ping(fresh["access_token"]) == 200
        await asyncio.sleep(1.2)
        replay = await http.post(token_url, data={**form, "refresh_token": first_refresh})
        assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
        after = await http.post(token_url, data={**form, "refresh_token": fresh["refresh_token"]})
        assert (after.status_code, after.json()["error"]) == (400, "invalid_grant")
        for _ in range(50):  # revocation reaches the verifier within 50 ms; allow slow machines
            if await ping(fresh["access_token"]) == 401:
                break
            await asyncio.sleep(0.1)
        assert await ping(fresh["access_token"]) == 401
    assert ("deny", "invalid_grant", client_id) in oauth_gateway.audit_rows("oauth/token")


async def test_revoking_a_consent_revokes_its_tokens(oauth_gateway: BastionProcess) -> None:
    url = oauth_gateway.url("notes")
    storage = MemoryTokenStorage()
    await call_through(url, ScriptedSignIn("bob", PASSWORDS["bob"]), storage, LEGACY)
    assert storage.tokens is not None
    assert storage.client_info is not None
    client_id, token = storage.client_info.client_id, storage.tokens.access_token
    config = ["--config", str(oauth_gateway.config_path)]
    listed = oauth_gateway.cli("consent", "list", "--sub", "bob", *config)
    assert "bob" in listed.stdout
    assert client_id[:12] in listed.stdout  # the table may wrap the rest of the id
    revoked = oauth_gateway.cli("consent", "revoke", "--sub", "bob", "--client", client_id, *config)
    assert "revoked 1 consents and 1 token families of bob" in revoked.stdout
    async with httpx2.AsyncClient() as http:
        for _ in range(50):  # the running gateway sees the revocation within 50 ms
            response = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params()},
                headers={"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"},
            )
            if response.status_code == 401:
                break
            await asyncio.sleep(0.1)
    assert response.status_code == 401
    again = oauth_gateway.cli("consent", "revoke", "--sub", "bob", "--client", client_id, *config, check=False)
    assert again.returncode == 1


def test_audit_chain_verifies_after_the_flows(oauth_gateway: BastionProcess) -> None:
    result = oauth_gateway.cli("audit", "verify", "--config", str(oauth_gateway.config_path), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_metadata_documents(oauth_gateway: BastionProcess) -> None:
    with httpx2.Client() as http:
        server = http.get(f"{oauth_gateway.base_url}/.well-known/oauth-authorization-server").json()
        resource = http.get(f"{oauth_gateway.base_url}/.well-known/oauth-protected-resource/mcp/notes").json()
    assert server["issuer"] == oauth_gateway.base_url
    assert server["code_challenge_methods_supported"] == ["S256"]
    assert server["registration_endpoint"] == f"{oauth_gateway.base_url}/oauth/register"
    assert server["authorization_response_iss_parameter_supported"] is True
    assert resource["authorization_servers"] == [oauth_gateway.base_url]
    assert resource["scopes_supported"] == ["mcp", "notes:write"]

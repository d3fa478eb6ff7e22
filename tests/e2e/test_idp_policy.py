"""A policy on ``principal.idp`` tells identity providers apart, end to end.

Real processes on loopback: two independent ``oidc-provider``s from npm over HTTPS (``corp`` and
``partner``, ``tests/support/oidc_provider``), ``bastion serve`` with both configured and a local
users file, the demo notes server, the ``mcp`` SDK client with its ``OAuthClientProvider``, and
people who sign in in headless Debian Chromium (the providers' users) or through Bastion's own
form (the users file's user). The policy permits people from ``corp`` only, and the users file's
people ``read_logs``: corp's user is allowed, the partner's user, who has the same login and the
same groups at the other provider, is denied, and every decision record names the idp.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp import MCPError
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from tests.support.bastion_process import BastionProcess, notes_server, write_users_file
from tests.support.browser import chromium
from tests.support.browser_people import BrowserPerson
from tests.support.e2e_helpers import MODERN, jwt_payload, wait_until
from tests.support.oidc_provider import OIDCAccount, OIDCClient, OIDCProvider
from tests.support.pki import make_pki

from bastion.demo.sign_in import MemoryTokenStorage, Person, ScriptedSignIn, oauth_http_client

pytestmark = pytest.mark.e2e

DANA = OIDCAccount("dana", "dana's passphrase", "dana@example.com", "Dana Scully", ("engineering",))
#: The same login and groups at an independent provider: only the idp tells them apart.
PARTNER_DANA = OIDCAccount("dana", "partner passphrase", "dana@partner.example", "Dana", ("engineering",))
CAROL = ("carol", "carol's password")
CLIENT_ID = "bastion-at-idp"
POLICY = """
@id("corp-people")
permit (principal, action == Action::"tools/call", resource)
when { principal.idp == "corp" };

@id("users-file-reads-logs")
permit (principal, action == Action::"tools/call", resource == Tool::"notes/read_logs")
when { principal.idp == "local" };
"""


@dataclass
class Setup:
    bastion: BastionProcess
    corp: OIDCProvider
    partner: OIDCProvider


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("idp-policy")
    pki = make_pki(workdir)
    (workdir / "idp.cedar").write_text(POLICY, encoding="utf-8")
    users = write_users_file(workdir, {CAROL[0]: (CAROL[1], ("engineering",))})
    with notes_server() as notes_url:
        bastion = BastionProcess(
            workdir,
            {
                "routes": [{"name": "notes", "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
                "policy": {"files": ["idp.cedar"]},
            },
        )
        client = OIDCClient(CLIENT_ID, (f"{bastion.base_url}/oauth/callback",))  # public: PKCE only
        (workdir / "corp").mkdir()
        (workdir / "partner").mkdir()
        with (
            OIDCProvider(workdir / "corp", pki, accounts=[DANA], clients=[client]) as corp,
            OIDCProvider(workdir / "partner", pki, accounts=[PARTNER_DANA], clients=[client]) as partner,
        ):
            scopes = ["openid", "email", "profile", "groups"]
            providers = [
                {"name": "corp", "label": "Corp SSO", "issuer": corp.issuer, "client_id": CLIENT_ID, "scopes": scopes},
                {"name": "partner", "issuer": partner.issuer, "client_id": CLIENT_ID, "scopes": scopes},
            ]
            bastion.config["identity"] = {
                "authorization_server": {
                    "dynamic_registration": True,
                    "identity_providers": providers,
                    "users_file": users,
                }
            }
            allow = [f"127.0.0.1:{corp.port}", f"127.0.0.1:{partner.port}"]
            bastion.config["egress"] = {"allow": allow, "ca_file": str(pki.ca_file)}
            bastion.write_config()
            with bastion:
                yield Setup(bastion, corp, partner)


@dataclass
class Session:
    """A signed-in MCP client, what the token endpoint gave it, and what it was allowed to do."""

    client: Client
    storage: MemoryTokenStorage

    @property
    def claims(self) -> dict[str, Any]:
        assert self.storage.tokens is not None
        return jwt_payload(self.storage.tokens.access_token)

    async def tools(self) -> list[str]:
        return sorted(tool.name for tool in (await self.client.list_tools()).tools)

    async def denial(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The JSON-RPC error data of a call that must be denied."""
        with pytest.raises(MCPError) as denied:
            await self.client.call_tool(tool, arguments)
        assert denied.value.code == -32003, denied.value.error
        return denied.value.data or {}


@asynccontextmanager
async def signed_in(setup: Setup, person: Person) -> AsyncIterator[Session]:
    url, storage = setup.bastion.url("notes"), MemoryTokenStorage()
    async with (
        oauth_http_client(url, person, storage) as http,
        Client(streamable_http_client(url, http_client=http), mode=MODERN) as client,
    ):
        yield Session(client, storage)


@asynccontextmanager
async def provider_person(account: OIDCAccount, button: str) -> AsyncIterator[BrowserPerson]:
    """``account`` in a fresh headless Chromium, about to click ``button`` on Bastion's sign-in page."""
    async with chromium() as browser:
        context = await browser.new_context(ignore_https_errors=True)  # the providers' test CA
        person = BrowserPerson(await context.new_page(), account, button)
        await person.start()
        yield person


def decision_record(setup: Setup, tool: str, sub: str) -> dict[str, Any]:
    """The decision record of ``sub``'s (one) ``tools/call`` of ``notes/<tool>``; a deny's record may be
    committed just after the answer, so this waits for it."""

    def find() -> list[dict[str, Any]]:
        with sqlite3.connect(setup.bastion.database) as db:
            rows = db.execute(
                "SELECT record FROM audit_events WHERE kind = 'decision' AND target = ? "
                "AND json_extract(record, '$.method') = 'tools/call' AND json_extract(record, '$.principal.sub') = ?",
                (tool, sub),
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    (record,) = wait_until(find)
    return record


def refreshed_claims(setup: Setup, session: Session) -> dict[str, Any]:
    """Rotate the session's refresh token at Bastion's token endpoint; the new access token's claims."""
    tokens, info = session.storage.tokens, session.storage.client_info
    assert tokens is not None
    assert tokens.refresh_token
    assert info is not None
    response = httpx2.post(
        f"{setup.bastion.base_url}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token,
            "client_id": info.client_id,
            "resource": setup.bastion.url("notes"),
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return jwt_payload(response.json()["access_token"])


async def test_a_person_from_the_provider_the_policy_names_is_allowed(setup: Setup) -> None:
    async with provider_person(DANA, "Sign in with Corp SSO") as person, signed_in(setup, person) as session:
        tools = await session.tools()
        result = await session.client.call_tool("search_notes", {"query": "welcome"})
        claims = session.claims
        refreshed = refreshed_claims(setup, session)

    assert "delete_note" in tools
    assert result.is_error is False
    assert (claims["sub"], claims["bastion_idp"], claims["iss"]) == ("corp:dana", "corp", setup.bastion.base_url)
    assert refreshed["bastion_idp"] == "corp"  # a refreshed token keeps the provider
    assert any(url.startswith(setup.corp.issuer) for url in person.seen)
    record = decision_record(setup, "search_notes", "corp:dana")
    assert (record["decision"]["effect"], record["decision"]["policy_ids"]) == ("allow", ["corp-people"])
    assert (record["principal"]["idp"], record["principal"]["issuer"]) == ("corp", setup.bastion.base_url)


async def test_the_same_login_and_groups_at_another_provider_are_denied(setup: Setup) -> None:
    async with provider_person(PARTNER_DANA, "Sign in with partner") as person, signed_in(setup, person) as session:
        tools = await session.tools()
        denied = await session.denial("search_notes", {"query": "welcome"})
        claims = session.claims

    assert tools == []  # nothing may be called, so nothing is listed
    assert denied.get("policies", []) == []  # no policy permits: a default deny
    assert (claims["sub"], claims["groups"], claims["bastion_idp"]) == ("partner:dana", ["engineering"], "partner")
    assert any(url.startswith(setup.partner.issuer) for url in person.seen)
    assert not any(url.startswith(setup.corp.issuer) for url in person.seen)
    record = decision_record(setup, "search_notes", "partner:dana")
    assert (record["decision"]["effect"], record["decision"]["reason"]) == ("deny", "policy_denied")
    assert (record["principal"]["idp"], record["principal"]["issuer"]) == ("partner", setup.bastion.base_url)


async def test_a_person_from_the_users_file_has_its_name(setup: Setup) -> None:
    # Bastion's own sign-in form (the providers' buttons beside it), answered over HTTP
    async with signed_in(setup, ScriptedSignIn(*CAROL)) as session:
        tools = await session.tools()
        logs = await session.client.call_tool("read_logs", {"env": "dev"})
        denied = await session.denial("search_notes", {"query": "welcome"})
        claims = session.claims

    assert tools == ["read_logs"]
    assert logs.is_error is False
    assert denied.get("policies", []) == []
    assert (claims["sub"], claims["bastion_idp"]) == ("carol", "local")
    allowed, refused = decision_record(setup, "read_logs", "carol"), decision_record(setup, "search_notes", "carol")
    assert (allowed["decision"]["policy_ids"], allowed["principal"]["idp"]) == (["users-file-reads-logs"], "local")
    assert (refused["decision"]["effect"], refused["principal"]["idp"]) == ("deny", "local")

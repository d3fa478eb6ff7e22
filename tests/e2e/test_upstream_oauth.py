"""Upstream OAuth bridging end to end: each person connects an OAuth-protected upstream once, in the
portal, and Bastion presents that person's upstream token, never the client's.

Real processes on loopback, nothing mocked:

- the upstream's authorization server: ``oidc-provider`` (npm) over HTTPS with a throwaway CA,
  with RFC 8707 resource indicators, refresh tokens (rotated), revocation, introspection and
  dynamic registration (``tests/support/oidc_provider``);
- the upstream: an MCP server written with the ``mcp`` SDK that accepts only that server's
  tokens for its own resource (RFC 7662 introspection, so revocation bites at once) and records
  every request's headers (``tests/support/oauth_upstream_server``);
- ``bastion serve`` with a users file and two routes to that upstream: ``tracker`` (configured
  issuer and client, refreshed 6 s before expiry) and ``tracker-auto`` (discovered from the
  upstream's 401 and RFC 9728 metadata, registered dynamically, not refreshed early), where a
  token revoked at the server mid-session meets the upstream's 401;
- people in headless Chromium (sign in to Bastion, consent, connect in the portal, sign in at
  the upstream's server) and the SDK's ``OAuthClientProvider`` as their MCP client.

The processes are started by ``tests/support/upstream_oauth_world``. Upstream access tokens
live 8 s, so the refresh path runs within the test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.auth.oauth2 import OAuthClientProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from mcp.shared.exceptions import MCPError
from playwright.async_api import BrowserContext
from tests.support.browser import chromium
from tests.support.browser_people import ChromiumSignIn, LoopbackSite, new_context
from tests.support.e2e_helpers import MODERN
from tests.support.oidc_provider import OIDCAccount
from tests.support.upstream_oauth_world import BASTION_CLIENT, UpstreamOAuthWorld, upstream_oauth_world

from bastion.credentials.vault import TokenVault, VaultKeys
from bastion.credentials.vault_sqlite import SQLiteVaultStore
from bastion.demo.sign_in import MemoryTokenStorage

pytestmark = pytest.mark.e2e

PASSWORDS = {"alice": "alice's bastion passphrase", "bob": "bob's bastion passphrase"}
UPSTREAM_ACCOUNTS = {
    "alice": OIDCAccount("alice-up", "alice at the tracker", "alice@tracker.example", "Alice at Tracker"),
    "bob": OIDCAccount("bob-up", "bob at the tracker", "bob@tracker.example", "Bob at Tracker"),
}
TOKEN_TTL_S = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamOAuthWorld]:
    """The world of ``tests/support/upstream_oauth_world`` with 8 s upstream tokens, ``tracker``
    refreshed 6 s early, and ``tracker-auto``: discovered, registered by Bastion, never refreshed early."""
    auto = {
        "name": "tracker-auto",
        "title": "Tracker (discovered)",
        "credentials": {"oauth": {"refresh_margin_s": 0}},
    }
    with upstream_oauth_world(
        tmp_path_factory.mktemp("upstream-oauth"),
        people={name: (PASSWORDS[name], ["engineering"]) for name in PASSWORDS},
        accounts=list(UPSTREAM_ACCOUNTS.values()),
        extra_routes=[auto],
        tracker_oauth={"refresh_margin_s": TOKEN_TTL_S - 2},
        token_ttl_s=TOKEN_TTL_S,
        registration=True,
        dynamic_registration=True,
    ) as world:
        yield world


class Person:
    """Someone with a Bastion account, an account at the tracker, a browser profile and an MCP client."""

    def __init__(self, name: str, world: UpstreamOAuthWorld, context: BrowserContext, listener: LoopbackSite) -> None:
        self.name = name
        self.world = world
        self.context = context
        self.storage: dict[str, MemoryTokenStorage] = {}  # per route: a token's audience is one route
        self.browser_person = ChromiumSignIn(context, name, PASSWORDS[name], listener)
        self.upstream_account = UPSTREAM_ACCOUNTS[name]

    def bastion_token(self, route: str = "tracker") -> str:
        """The access token Bastion issued this person's MCP client for ``route``."""
        tokens = self.storage[route].tokens
        assert tokens is not None
        return tokens.access_token

    async def call(self, route: str, tool: str = "whoami") -> dict[str, Any]:
        """Call ``tool`` on ``route`` with the SDK (signing in through the browser when needed);
        the tool's JSON result, or raise ``MCPError``."""
        url = self.world.bastion.url(route)
        metadata = OAuthClientMetadata(
            redirect_uris=[self.browser_person.redirect_uri],
            client_name=f"{self.name}'s MCP client",
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
        )
        storage = self.storage.setdefault(route, MemoryTokenStorage())
        auth = OAuthClientProvider(url, metadata, storage, self.browser_person.redirect,
                                   self.browser_person.callback)  # fmt: skip
        try:
            async with (
                httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30.0)) as http,
                Client(streamable_http_client(url, http_client=http), mode=MODERN) as client,
            ):
                result = await client.call_tool(tool, {})
        except BaseException as exc:  # the SDK may wrap it in task-group exception groups
            raise _mcp_error(exc) or exc from exc
        assert not result.is_error, result
        text = result.content[0].text  # type: ignore[union-attr]
        parsed: dict[str, Any] = json.loads(text)
        return parsed

    async def connect(self, url: str) -> str:
        """In the browser: open the connect ``url``, press Connect, sign in at the tracker; the portal's text."""
        page = await self.context.new_page()
        try:
            await page.goto(url)
            title = await page.title()
            assert title.startswith("Connect "), await page.inner_text("main")
            async with page.expect_navigation():
                await page.get_by_role("button", name="Connect", exact=True).click()
            if "/interaction/" in page.url:  # not yet signed in at the tracker's server in this browser
                await page.fill("input[name=login]", self.upstream_account.login)
                await page.fill("input[name=password]", self.upstream_account.password)
                async with page.expect_navigation():
                    await page.get_by_role("button", name="Sign in", exact=True).click()
            assert "/portal?" in page.url, f"{page.url}: {await page.inner_text('body')}"
            return await page.inner_text("main")
        finally:
            await page.close()

    async def disconnect(self, title: str) -> str:
        """In the browser: open the portal and press "Disconnect <title>"; the portal's text after."""
        page = await self.context.new_page()
        try:
            await page.goto(self.world.bastion.base_url + "/portal")
            async with page.expect_navigation(url=lambda u: "disconnected=" in u):
                await page.get_by_role("button", name=f"Disconnect {title}", exact=True).click()
            return await page.inner_text("main")
        finally:
            await page.close()


def _mcp_error(exc: BaseException) -> MCPError | None:
    if isinstance(exc, MCPError):
        return exc
    for inner in getattr(exc, "exceptions", ()) or (exc.__cause__, exc.__context__):
        if inner is not None and (found := _mcp_error(inner)) is not None:
            return found
    return None


async def expect_connection_required(person: Person, route: str) -> str:
    """The call fails with MCP's URL elicitation error (-32042); returns the URL it points at."""
    with pytest.raises(MCPError) as caught:
        await person.call(route)
    error = caught.value
    assert error.code == -32042, error
    (elicitation,) = error.data["elicitations"]
    assert elicitation["mode"] == "url"
    assert elicitation["elicitationId"]
    assert "Tracker" in elicitation["message"]
    url: str = elicitation["url"]
    return url


def upstream_bearers(world: UpstreamOAuthWorld) -> list[str]:
    """Every ``Authorization`` value the upstream received, in order."""
    return [value for request in world.upstream.requests() for value in request.header("authorization")]


def vault_rows(world: UpstreamOAuthWorld) -> list[tuple[str, str]]:
    return [(sub, route) for sub, route, _ in world.vault_rows()]


async def registered_client(world: UpstreamOAuthWorld, route: str) -> dict[str, Any]:
    """The client Bastion registered for ``route`` (RFC 7591), opened with the vault key as an operator could."""
    keys = VaultKeys(base64.urlsafe_b64decode(world.vault_key + "="))
    vault = TokenVault(SQLiteVaultStore(world.bastion.database), keys)
    await vault.start()
    try:
        client = await vault.get_client(route, world.provider.issuer)
    finally:
        await vault.close()
    assert client is not None
    return client


def raw_database(world: UpstreamOAuthWorld) -> bytes:
    data = world.bastion.database.parent
    return b"".join(path.read_bytes() for path in Path(data).iterdir() if path.name.startswith("bastion.db"))


def refreshes(world: UpstreamOAuthWorld, client_id: str, account: str) -> int:
    consumed = world.provider_events("refresh_token.consumed")
    return sum(1 for event in consumed if event["client_id"] == client_id and event["account_id"] == account)


async def test_people_connect_upstreams_in_the_portal_and_bastion_brokers_their_tokens(
    world: UpstreamOAuthWorld,
) -> None:
    bastion = world.bastion
    async with LoopbackSite() as listener, chromium() as browser:
        alice = Person("alice", world, await new_context(browser, ignore_https_errors=True), listener)
        bob = Person("bob", world, await new_context(browser, ignore_https_errors=True), listener)

        # Not connected: the call is refused with the URL elicitation error, before the upstream sees it.
        seen_before = len(world.upstream.requests())
        connect_url = await expect_connection_required(alice, "tracker")
        assert connect_url == f"{bastion.base_url}/portal/connect/tracker"
        assert len(world.upstream.requests()) == seen_before

        # Alice connects in the portal (already signed in to Bastion in this browser), then calls.
        text = await alice.connect(connect_url)
        assert "Tracker is connected." in text
        whoami = await alice.call("tracker")
        assert whoami["sub"] == "alice-up"
        assert whoami["client_id"] == BASTION_CLIENT
        assert whoami["resource"] == world.upstream.resource

        # Bob connects with his own tracker account; neither sees the other's.
        await expect_connection_required(bob, "tracker")
        assert "Tracker is connected." in await bob.connect(f"{bastion.base_url}/portal/connect/tracker")
        assert (await bob.call("tracker"))["sub"] == "bob-up"
        assert (await alice.call("tracker"))["sub"] == "alice-up"
        assert vault_rows(world) == [("alice", "tracker"), ("bob", "tracker")]

        # What reached the upstream: upstream tokens only, never the clients' Bastion tokens.
        bearers = upstream_bearers(world)
        assert bearers
        assert all(value.startswith("Bearer ") for value in bearers)
        upstream_tokens = {value.removeprefix("Bearer ") for value in bearers}
        assert alice.bastion_token() not in upstream_tokens
        assert bob.bastion_token() not in upstream_tokens
        assert not any(alice.bastion_token() in value or bob.bastion_token() in value
                       for request in world.upstream.requests() for _, value in request.headers)  # fmt: skip
        assert alice.bastion_token() != bob.bastion_token()

        # The vault read raw holds none of those tokens in clear text.
        raw = raw_database(world)
        assert not [token for token in upstream_tokens if token.encode() in raw]

        # Refresh before expiry, without asking Alice again: 6 s of an 8 s token are margin.
        before = refreshes(world, BASTION_CLIENT, "alice-up")
        await asyncio.sleep(3)
        assert (await alice.call("tracker"))["sub"] == "alice-up"
        assert refreshes(world, BASTION_CLIENT, "alice-up") == before + 1

        # The discovered route: RFC 9728 from the upstream's 401, dynamic registration, then connect.
        auto_url = await expect_connection_required(alice, "tracker-auto")
        assert "is connected." in await alice.connect(auto_url)
        registered = [e for e in world.provider.events() if e["event"] == "registration_create.success"]
        assert len(registered) == 1
        auto_client = registered[0]["client_id"]
        assert auto_client != BASTION_CLIENT
        assert (await alice.call("tracker-auto"))["client_id"] == auto_client

        # A token the upstream refuses mid-session (revoked at the tracker's server, which ends the
        # whole grant): Bastion sends it, meets the 401, tries one refresh, which is refused, and
        # asks Alice to connect again; the dead tokens are gone from the vault.
        revoked_token = upstream_bearers(world)[-1].removeprefix("Bearer ")
        client = await registered_client(world, "tracker-auto")
        assert client["client_id"] == auto_client
        revocation = httpx2.post(
            f"{world.provider.issuer}/token/revocation",
            data={"token": revoked_token, "token_type_hint": "access_token"},
            auth=(auto_client, client["client_secret"]),
            verify=ssl.create_default_context(cafile=world.pki.ca_file),
        )
        assert revocation.status_code == 200
        count = len(upstream_bearers(world))
        again = await expect_connection_required(alice, "tracker-auto")
        assert again == auto_url
        assert upstream_bearers(world)[count:] == [f"Bearer {revoked_token}"]  # sent once, refused, not resent
        assert ("alice", "tracker-auto") not in vault_rows(world)
        assert "is connected." in await alice.connect(auto_url)
        assert (await alice.call("tracker-auto"))["sub"] == "alice-up"

        # The discovery API: Alice's routes and their status, with her Bastion token.
        listing = httpx2.get(f"{bastion.base_url}/portal/api/routes",
                             headers={"authorization": f"Bearer {alice.bastion_token()}"}).json()  # fmt: skip
        status = {item["name"]: item["connected"] for item in listing["routes"]}
        assert listing["user"] == "alice"
        assert status == {"tracker": True, "tracker-auto": True}
        assert all(item["credential"] == "oauth_user" for item in listing["routes"])
        assert httpx2.get(f"{bastion.base_url}/portal/api/routes").status_code == 401

        # Bob disconnects: revoked at the tracker's server, deleted from the vault, and asked again.
        revoked_before = [e for e in world.provider.events() if e["event"] == "grant.revoked"]
        assert "Tracker is disconnected." in await bob.disconnect("Tracker")
        revoked = [e for e in world.provider.events() if e["event"] == "grant.revoked"][len(revoked_before) :]
        assert [e["account_id"] for e in revoked] == ["bob-up"]
        assert ("bob", "tracker") not in vault_rows(world)
        await expect_connection_required(bob, "tracker")
        assert (await alice.call("tracker"))["sub"] == "alice-up"  # Alice's connection is untouched

    assert [row[0] for row in bastion.audit_rows("upstream/connect")] == ["allow"] * 4
    assert [row[0] for row in bastion.audit_rows("upstream/disconnect")] == ["allow"]

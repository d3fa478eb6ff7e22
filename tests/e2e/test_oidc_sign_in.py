"""Signing in to Bastion through an OpenID Connect provider, end to end, in a real browser.

Real processes on loopback: ``oidc-provider`` from npm over HTTPS (``tests/support/oidc_provider``),
``bastion serve`` with that provider configured (reached through its egress guard, allowed by
``egress.allow`` and trusting the test CA), the demo notes server, the ``mcp`` SDK client with its
``OAuthClientProvider``, and a person in headless Debian Chromium (Playwright) who clicks
"Sign in with Corp SSO", signs in on the provider's own page and approves Bastion's consent page.

The groups the provider returns become the Cedar groups the demo policy is written against.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from playwright.async_api import Browser, Page
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess, notes_server
from tests.support.browser import chromium
from tests.support.browser_people import BrowserPerson
from tests.support.e2e_helpers import MODERN, jwt_payload
from tests.support.oidc_provider import OIDCAccount, OIDCClient, OIDCProvider
from tests.support.pki import make_pki

from bastion.demo.sign_in import MemoryTokenStorage, oauth_http_client

pytestmark = pytest.mark.e2e

DANA = OIDCAccount("dana", "dana's passphrase", "dana@example.com", "Dana Scully", ("engineering",))
ERIN = OIDCAccount("erin", "erin's passphrase", "erin@example.com", "Erin Reagan", ("support", "on call"))
#: The same login at a second provider: another person as far as Bastion is concerned.
PARTNER_DANA = OIDCAccount("dana", "partner passphrase", "dana@partner.example", "Dana at Partner", ("support",))
BASTION_CLIENT = "bastion-at-corp"


@dataclass
class Setup:
    bastion: BastionProcess
    provider: OIDCProvider
    partner: OIDCProvider


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("oidc-sign-in")
    pki = make_pki(workdir)
    with notes_server() as notes_url:
        bastion = BastionProcess(
            workdir,
            {
                "routes": [
                    {
                        "name": "notes",
                        "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]},
                        # What a deployment writes for a server whose annotations it does not trust:
                        # support may search (read); the tools not named are destructive.
                        "tools": {"search_notes": {"risk": "read"}, "read_logs": {"risk": "read"}},
                    }
                ]
            },
        )
        client = OIDCClient(BASTION_CLIENT, (f"{bastion.base_url}/oauth/callback",), "corp client secret")
        (workdir / "corp-secret").write_text(client.client_secret or "", encoding="utf-8")
        partner_dir = workdir / "partner"
        partner_dir.mkdir()
        public = OIDCClient(BASTION_CLIENT, client.redirect_uris)  # a public client there: PKCE only
        with (
            OIDCProvider(workdir, pki, accounts=[DANA, ERIN], clients=[client]) as provider,
            OIDCProvider(partner_dir, pki, accounts=[PARTNER_DANA], clients=[public]) as partner,
        ):
            corp = {
                "name": "corp",
                "label": "Corp SSO",
                "issuer": provider.issuer,
                "client_id": BASTION_CLIENT,
                "client_secret": {"file": "corp-secret"},
                "scopes": ["openid", "email", "profile", "groups"],
            }
            other = {"name": "partner", "issuer": partner.issuer, "client_id": BASTION_CLIENT, "scopes": corp["scopes"]}
            bastion.config["policy"] = {"files": [str(DEMO_CEDAR)]}
            bastion.config["identity"] = {
                "authorization_server": {"dynamic_registration": True, "identity_providers": [corp, other]}
            }
            allow = [f"127.0.0.1:{provider.port}", f"127.0.0.1:{partner.port}"]
            bastion.config["egress"] = {"allow": allow, "ca_file": str(pki.ca_file)}
            bastion.write_config()
            with bastion:
                yield Setup(bastion, provider, partner)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def sign_in_and_call(
    setup: Setup, page: Page, account: OIDCAccount, button: str = "Sign in with Corp SSO"
) -> dict[str, Any]:
    url = setup.bastion.url("notes")
    person, storage = BrowserPerson(page, account, button), MemoryTokenStorage()
    await person.start()
    async with (
        oauth_http_client(url, person, storage) as http,
        Client(streamable_http_client(url, http_client=http), mode=MODERN) as client,
    ):
        tools = sorted(tool.name for tool in (await client.list_tools()).tools)
        result = await client.call_tool("search_notes", {"query": "welcome"})
    assert storage.tokens is not None
    return {"tools": tools, "result": result, "claims": jwt_payload(storage.tokens.access_token), "seen": person.seen}


def sign_in_records(setup: Setup) -> list[dict[str, Any]]:
    with sqlite3.connect(setup.bastion.database) as db:
        rows = db.execute(
            "SELECT record FROM audit_events WHERE json_extract(record, '$.method') = 'oauth/sign-in' ORDER BY seq"
        ).fetchall()
    return [json.loads(row[0]) for row in rows]


async def test_person_signs_in_at_the_provider_and_their_groups_become_cedar_groups(
    setup: Setup, browser: Browser
) -> None:
    context = await browser.new_context(ignore_https_errors=True)  # the provider's test CA
    seen = await sign_in_and_call(setup, await context.new_page(), DANA)

    claims = seen["claims"]
    assert claims["sub"] == "corp:dana"  # the provider's sub, namespaced by the provider's name
    assert claims["groups"] == ["engineering"]
    assert claims["email"] == "dana@example.com"
    assert claims["aud"] == setup.bastion.url("notes")
    assert "delete_note" in seen["tools"]  # engineering may call every tool
    assert seen["result"].is_error is False
    provider_pages = [url for url in seen["seen"] if url.startswith(setup.provider.issuer)]
    assert provider_pages, "the browser never visited the identity provider"
    record = sign_in_records(setup)[-1]
    assert record["decision"]["effect"] == "allow"
    assert record["principal"]["sub"] == "corp:dana"
    assert record["arguments"]["provider"] == "corp"
    await context.close()


async def test_groups_that_cannot_be_cedar_groups_are_dropped_and_counted(setup: Setup, browser: Browser) -> None:
    context = await browser.new_context(ignore_https_errors=True)
    seen = await sign_in_and_call(setup, await context.new_page(), ERIN)

    assert seen["claims"]["groups"] == ["support"]  # "on call" has a space: not a group name Bastion carries
    assert "delete_note" not in seen["tools"]  # support never sees destructive tools
    record = sign_in_records(setup)[-1]
    assert record["principal"]["sub"] == "corp:erin"
    assert record["arguments"]["dropped_groups"] == 1
    await context.close()


async def test_the_same_login_at_another_provider_is_another_person(setup: Setup, browser: Browser) -> None:
    context = await browser.new_context(ignore_https_errors=True)
    seen = await sign_in_and_call(setup, await context.new_page(), PARTNER_DANA, button="Sign in with partner")

    assert seen["claims"]["sub"] == "partner:dana"  # not corp:dana: a sub is unique only per issuer
    assert seen["claims"]["groups"] == ["support"]
    assert "delete_note" not in seen["tools"]
    assert any(url.startswith(setup.partner.issuer) for url in seen["seen"])
    assert not any(url.startswith(setup.provider.issuer) for url in seen["seen"])
    await context.close()

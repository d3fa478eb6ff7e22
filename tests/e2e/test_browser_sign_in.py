"""Bastion's sign-in and consent pages in a real browser: Debian's Chromium, driven by Playwright.

Everything is a real process on loopback: ``bastion serve`` (with a local users file, dynamic
registration and the demo notes server), headless Chromium (``tests.support.browser``), the
``mcp`` SDK's ``OAuthClientProvider``, and small aiohttp servers for the client's loopback
redirect URI and for an attacker's page. Nothing is mocked.

- ``test_sdk_client_signs_in_with_a_person_in_chromium``: the SDK runs the whole flow while a
  person signs in and approves in Chromium; the ``__Host-`` cookies (Secure, HttpOnly,
  SameSite=Lax) must work on http://127.0.0.1 (a potentially trustworthy origin).
- ``test_consent_page_cannot_be_framed``: an attacker's page on another loopback origin frames
  the authorization URL of the attacker's own client while the victim is signed in; Chromium
  must refuse to render it (``frame-ancestors 'none'``, ``X-Frame-Options: DENY``).
- ``test_denied_consent_sends_the_browser_back_with_access_denied``.

The form POSTs must carry ``Origin: <Bastion>``: with ``Referrer-Policy: no-referrer`` a browser
sends ``Origin: null`` on a page's own POSTs (Fetch, "serializing a request origin") and
Bastion's Origin check refuses them; the scripted HTTP person of ``bastion.demo.browser`` cannot
notice that, Chromium does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import secrets
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from mcp.client.auth.oauth2 import OAuthClientProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from playwright.async_api import BrowserContext
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess, notes_server, write_users_file
from tests.support.browser import chromium
from tests.support.browser_people import VIEWPORT, ChromiumSignIn, LoopbackSite, new_context
from tests.support.e2e_helpers import LEGACY, jwt_payload

from bastion.demo.browser import query_of
from bastion.demo.sign_in import MemoryTokenStorage
from bastion.oauth.authorize_endpoint import BROWSER_COOKIE, SIGN_IN_COOKIE

pytestmark = pytest.mark.e2e

PASSWORDS = {"alice": "correct horse alice", "bob": "battery staple bob"}
GROUPS = {"alice": ["engineering"], "bob": ["support"]}
ROUTE_TITLE = "Team notes"


@pytest.fixture(scope="module")
def browser_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    """``bastion serve`` with a users file (alice, bob), dynamic registration and the notes route."""
    workdir = tmp_path_factory.mktemp("browser")
    users_file = write_users_file(workdir, {name: (PASSWORDS[name], GROUPS[name]) for name in PASSWORDS})
    with notes_server() as notes_url:
        config = {
            "policy": {"files": [str(DEMO_CEDAR)]},
            "identity": {
                "authorization_server": {
                    "users_file": users_file,
                    "scopes": ["mcp"],
                    "default_scopes": ["mcp"],
                    "dynamic_registration": True,
                }
            },
            "routes": [
                {
                    "name": "notes",
                    "title": ROUTE_TITLE,
                    "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]},
                    "trust_annotations": True,  # the demo notes server: its annotations give the risk
                }
            ],
        }
        with BastionProcess(workdir, config) as bastion:
            yield bastion


def stored_for(bastion: BastionProcess, client_id: str) -> dict[str, int]:
    """How many authorization codes and remembered consents Bastion's store holds for ``client_id``."""
    with sqlite3.connect(bastion.database) as db:
        codes = db.execute(
            "SELECT count(*) FROM oauth_codes WHERE json_extract(grant_json, '$.client_id') = ?", (client_id,)
        ).fetchone()[0]
        consents = db.execute("SELECT count(*) FROM oauth_consents WHERE client_id = ?", (client_id,)).fetchone()[0]
    return {"codes": int(codes), "consents": int(consents)}


async def call_through(url: str, person: ChromiumSignIn, storage: MemoryTokenStorage) -> dict[str, Any]:
    """Connect to ``url`` with the SDK's OAuth (``person`` at the browser), list tools, call ``search_notes``."""
    metadata = OAuthClientMetadata(
        redirect_uris=[person.redirect_uri],  # pydantic parses the str
        client_name="Chromium e2e client",
        token_endpoint_auth_method="none",
        grant_types=["authorization_code", "refresh_token"],
    )
    auth = OAuthClientProvider(url, metadata, storage, person.redirect, person.callback)
    try:
        async with (
            httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30.0)) as http,
            Client(streamable_http_client(url, http_client=http), mode=LEGACY) as client,
        ):
            tools = sorted(tool.name for tool in (await client.list_tools()).tools)
            result = await client.call_tool("search_notes", {"query": "restart"})
    except Exception as exc:
        if person.failure is not None:  # what went wrong at the browser, whatever the SDK wrapped it in
            raise person.failure from exc
        raise
    return {"tools": tools, "result": result}


async def test_sdk_client_signs_in_with_a_person_in_chromium(browser_gateway: BastionProcess) -> None:
    bastion = browser_gateway
    url = bastion.url("notes")
    storage = MemoryTokenStorage()
    async with LoopbackSite() as listener, chromium() as browser:
        context = await new_context(browser)
        person = ChromiumSignIn(context, "bob", PASSWORDS["bob"], listener)
        seen = await call_through(url, person, storage)
        cookies = {cookie["name"]: cookie for cookie in await context.cookies(bastion.base_url)}

    # The SDK registered, got a token for the route, and the call went through Bastion.
    assert storage.client_info is not None
    client_id = storage.client_info.client_id
    assert client_id.startswith("dcr-")
    assert "search_notes" in seen["tools"]
    assert "delete_note" not in seen["tools"]  # bob is in support
    assert seen["result"].is_error is False
    assert "runbook" in str(seen["result"].content)
    assert storage.tokens is not None
    claims = jwt_payload(storage.tokens.access_token)
    assert (claims["sub"], claims["aud"], claims["groups"]) == ("bob", url, ["support"])
    assert (claims["iss"], claims["client_id"]) == (bastion.base_url, client_id)

    # What the person saw and where the browser went.
    assert len(person.authorization_urls) == 1
    authorize = query_of(person.authorization_urls[0])
    assert (authorize["resource"], authorize["redirect_uri"]) == (url, person.redirect_uri)
    assert person.consent_title == f"Allow Chromium e2e client to use {ROUTE_TITLE}?"
    assert person.consent_text is not None
    assert f"127.0.0.1:{listener.port}" in person.consent_text  # "you will be sent to <redirect host>"
    assert "Bastion has not verified this application" in person.consent_text  # registered dynamically
    [arrived] = listener.hits_at("/callback")
    assert person.redirected_to is not None
    assert person.redirected_to.startswith(person.redirect_uri + "?")
    assert arrived.query["state"] == authorize["state"]
    assert arrived.query["iss"] == bastion.base_url

    # The __Host- cookies: kept by Chromium with their attributes, hidden from script, sent back.
    assert set(cookies) == {BROWSER_COOKIE, SIGN_IN_COOKIE}
    for cookie in cookies.values():
        assert (cookie["domain"], cookie["path"]) == ("127.0.0.1", "/")  # host-only, as __Host- requires
        assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (True, True, "Lax")
    assert person.document_cookie == ""  # HttpOnly: the consent page's script cannot read them
    sign_in_post, consent_post = person.posts
    for post in (sign_in_post, consent_post):  # a same-origin POST with its real Origin, not "null"
        assert (post["origin"], post["sec-fetch-site"]) == (bastion.base_url, "same-origin")
    assert f"{BROWSER_COOKIE}={cookies[BROWSER_COOKIE]['value']}" in sign_in_post["cookie"]
    assert f"{SIGN_IN_COOKIE}={cookies[SIGN_IN_COOKIE]['value']}" in consent_post["cookie"]

    assert ("allow", None, client_id) in bastion.audit_rows("oauth/sign-in")
    assert ("allow", None, client_id) in bastion.audit_rows("oauth/authorize")
    assert ("allow", None, client_id) in bastion.audit_rows("oauth/token")


def register(bastion: BastionProcess, name: str, redirect_uri: str) -> str:
    """Register a public client by dynamic registration (RFC 7591), as anyone may; its client_id."""
    response = httpx2.post(
        f"{bastion.base_url}/oauth/register",
        json={
            "client_name": name,
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
        },
        timeout=10.0,
    )
    assert response.status_code == 201, response.text
    client_id: str = response.json()["client_id"]
    return client_id


def authorization_url(bastion: BastionProcess, client_id: str, redirect_uri: str, state: str | None = None) -> str:
    """An authorization request (code, PKCE S256, resource = the notes route) for ``client_id``."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": bastion.url("notes"),
    }
    if state is not None:
        params["state"] = state
    return f"{bastion.base_url}/oauth/authorize?{urlencode(params)}"


def attacker_page(framed_url: str) -> str:
    """The attacker's page: Bastion's URL in a full-window iframe, and a script that tries to read it."""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Claim your prize</title>
<style>
html, body {{ margin: 0; height: 100%; }}
iframe {{ border: 0; width: 100%; height: 100%; display: block; }}
</style>
</head><body>
<iframe id="victim" src="{html.escape(framed_url)}"></iframe>
<script>
const frame = document.getElementById("victim");
frame.addEventListener("load", () => {{
  const report = {{}};
  try {{ report.document = String(frame.contentDocument); }} catch (e) {{ report.document = "threw " + e.name; }}
  try {{ report.href = frame.contentWindow.location.href; }} catch (e) {{ report.href = "threw " + e.name; }}
  try {{ report.text = frame.contentWindow.document.body.innerText; }} catch (e) {{ report.text = "threw " + e.name; }}
  window.report = report;
}});
</script>
</body></html>"""


async def sign_in_victim(bastion: BastionProcess, context: BrowserContext, username: str) -> None:
    """Sign ``username`` in, in ``context``, the way a victim did earlier: approving their own app in Chromium."""
    async with LoopbackSite() as own_app:
        person = ChromiumSignIn(context, username, PASSWORDS[username], own_app)
        client_id = register(bastion, "Victim's own app", person.redirect_uri)
        await person.redirect(authorization_url(bastion, client_id, person.redirect_uri, "own"))
        assert "code" in own_app.hits_at("/callback")[0].query
    assert ("allow", None, client_id) in bastion.audit_rows("oauth/authorize")  # the query below finds approvals
    assert SIGN_IN_COOKIE in {cookie["name"] for cookie in await context.cookies(bastion.base_url)}


@pytest.mark.parametrize("attacker_host", ["localhost", "127.0.0.1"], ids=["cross-site", "same-site-other-port"])
async def test_consent_page_cannot_be_framed(browser_gateway: BastionProcess, attacker_host: str) -> None:
    """The attacker registers its own client (redirect URI on the attacker's server), frames the
    authorization URL on its page and hopes the signed-in victim clicks "Allow" through it.

    ``localhost`` is another site than 127.0.0.1: SameSite=Lax keeps the session cookie out of
    the frame, so Bastion answers with its sign-in page. ``127.0.0.1`` on another port is the
    same site (sites ignore ports): the session cookie goes along and Bastion answers with the
    consent page; only ``frame-ancestors``/``X-Frame-Options`` stop it.
    """
    bastion = browser_gateway
    async with LoopbackSite() as attacker, chromium() as browser:
        attacker_origin = attacker.url("", host=attacker_host)
        stolen_at = attacker.url("/callback", host=attacker_host)
        client_id = register(bastion, "Notes helper", stolen_at)
        framed_url = authorization_url(bastion, client_id, stolen_at)
        attacker.pages["/"] = attacker_page(framed_url)
        context = await new_context(browser)
        await sign_in_victim(bastion, context, "alice")

        # Top-level, the very same URL shows the consent page to the signed-in victim.
        top = await context.new_page()
        answer = await top.goto(framed_url)
        assert answer is not None
        assert answer.status == 200
        assert await top.title() == f"Allow Notes helper to use {ROUTE_TITLE}?"
        allow = top.get_by_role("button", name="Allow", exact=True)
        await allow.wait_for(state="visible")
        assert "alice" in await top.inner_text("main")  # "Signed in as"
        box = await allow.bounding_box()
        assert box is not None
        assert box["y"] + box["height"] < VIEWPORT["height"]  # on screen: a click there would hit it
        await top.close()

        # The attacker's page frames it.
        page = await context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        posts: list[str] = []
        page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
        async with page.expect_response(lambda r: r.url.startswith(f"{bastion.base_url}/oauth/authorize")) as framed:
            await page.goto(attacker.url("/", host=attacker_host))
        await page.wait_for_function("window.report !== undefined")  # the frame's load event fired

        # Bastion answered the framed request, with the headers that forbid framing...
        response = await framed.value
        assert response.status == 200
        headers = await response.all_headers()
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY"
        sent = (await response.request.all_headers()).get("cookie", "")
        if attacker_host == "127.0.0.1":  # same site: the session went along, so it was the consent page
            assert f"{SIGN_IN_COOKIE}=" in sent
            assert f"form-action 'self' {attacker_origin};" in csp  # only the consent page allows the redirect
        else:  # cross-site: SameSite=Lax withheld the session, so it was the sign-in page
            assert f"{SIGN_IN_COOKIE}=" not in sent
            assert "form-action 'self';" in csp

        # ...and Chromium refused to render it: it says so on the console, the frame holds its error page.
        refusal = (
            f"error: Framing '{bastion.base_url}/' violates the following Content Security Policy directive: "
            "\"frame-ancestors 'none'\". The request has been blocked."
        )
        for _ in range(20):  # logged before the frame's load event; give the event a moment to arrive
            if any(line.startswith(refusal) for line in console):
                break
            await asyncio.sleep(0.1)
        assert any(line.startswith(refusal) for line in console), console
        [frame] = [frame for frame in page.frames if frame is not page.main_frame]
        assert frame.url == "chrome-error://chromewebdata/"
        assert await frame.locator("form").count() == 0
        assert await frame.get_by_role("button", name="Allow").count() == 0
        assert "csrf_token" not in await frame.content()

        # The attacker's own script cannot look into the frame.
        report = await page.evaluate("window.report")
        assert report == {"document": "null", "href": "threw SecurityError", "text": "threw SecurityError"}

        # A click where "Allow" sits on the real consent page approves nothing.
        await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.wait_for_timeout(500)
        assert posts == []
        await context.close()

    assert attacker.hits_at("/callback") == []  # no code (or error) was sent to the attacker
    assert [row for row in bastion.audit_rows("oauth/authorize") if row[2] == client_id] == []
    assert [row for row in bastion.audit_rows("oauth/consent") if row[2] == client_id] == []
    assert stored_for(bastion, client_id) == {"codes": 0, "consents": 0}


async def test_denied_consent_sends_the_browser_back_with_access_denied(browser_gateway: BastionProcess) -> None:
    bastion = browser_gateway
    url = bastion.url("notes")
    storage = MemoryTokenStorage()
    async with LoopbackSite() as listener, chromium() as browser:
        context = await new_context(browser)
        person = ChromiumSignIn(context, "alice", PASSWORDS["alice"], listener, decision="deny")
        with pytest.raises(Exception) as raised:  # noqa: PT011 - the SDK wraps the callback's error
            await call_through(url, person, storage)
        if person.failure is not None:
            raise person.failure

    assert "access_denied" in repr(raised.value) or "access_denied" in str(raised.value.__cause__)
    assert storage.tokens is None
    assert storage.client_info is not None
    client_id = storage.client_info.client_id
    assert person.consent_title == f"Allow Chromium e2e client to use {ROUTE_TITLE}?"
    [arrived] = listener.hits_at("/callback")
    assert person.redirected_to is not None
    assert person.redirected_to.startswith(person.redirect_uri + "?")
    assert arrived.query["error"] == "access_denied"
    assert "code" not in arrived.query
    assert arrived.query["state"] == query_of(person.authorization_urls[0])["state"]
    assert arrived.query["iss"] == bastion.base_url
    assert ("deny", "access_denied", client_id) in bastion.audit_rows("oauth/consent")
    assert [row for row in bastion.audit_rows("oauth/authorize") if row[2] == client_id] == []
    assert stored_for(bastion, client_id) == {"codes": 0, "consents": 0}

"""People in Chromium for end-to-end tests: a loopback site that records what reaches it, a
person who signs in to Bastion and approves (or denies) consent for the SDK's OAuth flow, and a
person who signs in through an OpenID Connect provider (``tests/support/oidc_provider``).

    async with LoopbackSite() as listener:
        context = await new_context(browser)
        person = ChromiumSignIn(context, "alice", "password", listener)
        auth = OAuthClientProvider(url, metadata, storage, person.redirect, person.callback)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

from aiohttp import web
from mcp.shared.auth import AuthorizationCodeResult
from playwright.async_api import Browser, BrowserContext, Page, Route, ViewportSize

from bastion.demo.browser import query_of
from bastion.demo.sign_in import CALLBACK
from tests.support.bastion_process import free_port
from tests.support.oidc_provider import OIDCAccount

__all__ = ["TIMEOUT_MS", "VIEWPORT", "BrowserPerson", "ChromiumSignIn", "Hit", "LoopbackSite", "new_context"]

TIMEOUT_MS = 15_000
VIEWPORT: ViewportSize = {"width": 1280, "height": 1200}  # tall enough for the whole consent page, "Allow" included


@dataclass(frozen=True)
class Hit:
    """One request a ``LoopbackSite`` received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


class LoopbackSite:
    """A tiny real HTTP server on 127.0.0.1 (a free port) that records every request.

    ``pages`` maps paths to the HTML served there; any other path answers "You can close this
    window" (what a native app's loopback redirect listener shows).
    """

    def __init__(self, pages: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.pages = dict(pages or {})
        self.hits: list[Hit] = []
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        """``http://host:port/path``; ``host`` may be ``localhost`` (another origin and site than 127.0.0.1)."""
        return f"http://{host}:{self.port}{path}"

    def hits_at(self, path: str) -> list[Hit]:
        """The requests received at ``path``."""
        return [hit for hit in self.hits if hit.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits.append(Hit(request.path, dict(request.query), dict(request.headers)))
        body = self.pages.get(request.path, "<!DOCTYPE html><title>Done</title><p>You can close this window.</p>")
        return web.Response(text=body, content_type="text/html")

    async def __aenter__(self) -> LoopbackSite:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class ChromiumSignIn:
    """The SDK's redirect and callback handlers, played by a person in Chromium.

    ``redirect`` opens the authorization URL in a new tab of ``context``, signs in on Bastion's
    page if it asks, reads the consent page and clicks "Allow" (``decision="approve"``) or
    "Deny"; the browser then follows Bastion's 303 to the client's redirect URI, where
    ``listener`` (the client's loopback server) receives it. ``callback`` hands the SDK what
    arrived there. It records what a test wants to check: the consent page, ``document.cookie``
    on it, the headers of each form POST Chromium sent.
    """

    def __init__(
        self, context: BrowserContext, username: str, password: str, listener: LoopbackSite, decision: str = "approve"
    ) -> None:
        self.context = context
        self.username = username
        self.password = password
        self.listener = listener
        self.decision = decision
        self.redirect_uri = listener.url("/callback")
        self.authorization_urls: list[str] = []
        self.posts: list[dict[str, str]] = []
        self.consent_title: str | None = None
        self.consent_text: str | None = None
        self.document_cookie: str | None = None
        self.redirected_to: str | None = None
        self.failure: AssertionError | None = None

    async def redirect(self, url: str) -> None:
        """Be the person at the browser for the authorization URL ``url``."""
        self.authorization_urls.append(url)
        parts = urlsplit(url)
        bastion = f"{parts.scheme}://{parts.netloc}"
        page = await self.context.new_page()
        try:
            await page.goto(url)
            if await page.locator("input[name=password]").count():
                assert await page.title() == "Sign in to Bastion"
                await page.get_by_label("Username").fill(self.username)
                await page.get_by_label("Password").fill(self.password)
                await self._submit(page, "Sign in", bastion)
            self.consent_title = await page.title()
            self.consent_text = await page.inner_text("main")
            self.document_cookie = await page.evaluate("document.cookie")
            await self._submit(page, "Allow" if self.decision == "approve" else "Deny", bastion)
            self.redirected_to = page.url
        finally:
            await page.close()

    async def _submit(self, page: Page, button: str, bastion: str) -> None:
        """Click ``button`` of Bastion's form and wait for the page it leads to; raise if Bastion refused."""
        async with page.expect_request(lambda r: r.method == "POST") as posted, page.expect_navigation():
            await page.get_by_role("button", name=button, exact=True).click()
        headers = await (await posted.value).all_headers()
        self.posts.append(headers)
        if page.url.startswith(bastion) and await page.locator("form").count() == 0:  # an error page
            message = await page.inner_text("main")
            origin = headers.get("origin")
            self.failure = AssertionError(f"Bastion refused the {button!r} form (Origin: {origin}): {message}")
            raise self.failure

    async def callback(self) -> AuthorizationCodeResult:
        """What arrived at the redirect URI: the code, state and issuer (RFC 9207)."""
        hits = self.listener.hits_at("/callback")
        if not hits:
            raise RuntimeError(f"nothing arrived at {self.redirect_uri}; the browser is at {self.redirected_to}")
        params = hits[-1].query
        if "code" not in params:
            raise RuntimeError(f"authorization failed: {params.get('error')}: {params.get('error_description')}")
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


async def new_context(browser: Browser, *, ignore_https_errors: bool = False) -> BrowserContext:
    """A fresh browser profile (cookie jar) with short timeouts; ``ignore_https_errors`` for sites
    whose certificate comes from a test CA (Chromium does not read ``pki.ca_file``)."""
    context = await browser.new_context(viewport=VIEWPORT, ignore_https_errors=ignore_https_errors)
    context.set_default_timeout(TIMEOUT_MS)
    return context


@dataclass
class BrowserPerson:
    """The SDK's redirect and callback handlers, played in Chromium by ``account`` of an OpenID
    Connect provider: on Bastion's sign-in page the person clicks ``button``, signs in on the
    provider's own page and answers Bastion's consent page with ``decision``.

    The MCP client's redirect URI (``CALLBACK``) is answered by the page itself: the
    browser's request to it is intercepted and its URL kept (as a native app's
    loopback listener would). ``seen`` lists every URL the page went to.
    """

    page: Page
    account: OIDCAccount
    button: str = "Sign in with Corp SSO"
    decision: str = "Allow"
    arrived: asyncio.Future[str] = field(default_factory=asyncio.Future)
    seen: list[str] = field(default_factory=list)

    async def start(self) -> None:
        """Intercept the client's redirect URI and record navigations; call before ``redirect``."""

        async def answer(route: Route) -> None:
            if not self.arrived.done():
                self.arrived.set_result(route.request.url)
            await route.fulfill(status=200, content_type="text/html", body="<p>You can close this window.</p>")

        await self.page.route(lambda url: url.startswith(CALLBACK), answer)
        self.page.on("framenavigated", lambda frame: self.seen.append(frame.url))

    async def redirect(self, url: str) -> None:
        """Be the person at the browser for the authorization URL ``url``."""
        page = self.page
        await page.goto(url)
        await page.get_by_role("link", name=self.button).click()
        await page.wait_for_selector("input[name=login]")
        await page.fill("input[name=login]", self.account.login)
        await page.fill("input[name=password]", self.account.password)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("button", name=self.decision).click()

    async def callback(self) -> AuthorizationCodeResult:
        """What arrived at the redirect URI: the code, state and issuer (RFC 9207)."""
        params = query_of(await asyncio.wait_for(self.arrived, 30))
        if "code" not in params:
            raise RuntimeError(f"authorization failed: {params.get('error')}: {params.get('error_description')}")
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


async def portal_sign_in(page: Page, base: str, username: str, password: str) -> None:
    """Sign ``username`` in at Bastion's portal (``base``) with the password form, as a person would
    in Chromium; returns once the browser is on ``/portal``."""
    await page.goto(f"{base}/portal/sign-in")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    async with page.expect_navigation(url=lambda url: url == f"{base}/portal"):
        await page.get_by_role("button", name="Sign in", exact=True).click()

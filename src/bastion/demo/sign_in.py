"""An MCP client that signs in to Bastion with OAuth, with a scripted person at the browser.

The ``mcp`` SDK's ``OAuthClientProvider`` does the client's part by the MCP
authorization spec (2025-11-25, basic/authorization): it follows the 401 challenge
to the protected resource metadata (RFC 9728) and the authorization server metadata
(RFC 8414), registers (RFC 7591) unless it already has a client id, and runs the
authorization code flow with PKCE and ``resource``. ``ScriptedSignIn`` plays the
person: it opens the authorization URL, signs in and answers the consent page
(``bastion.demo.browser``), and hands the redirect back to the SDK.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httpx2
from mcp.client.auth.oauth2 import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from bastion.demo.browser import OAuthUser, query_of

__all__ = ["CALLBACK", "MemoryTokenStorage", "Person", "ScriptedSignIn", "oauth_http_client"]

#: The redirect URI of the scripted client (a loopback address: RFC 8252 section 7.3).
CALLBACK = "http://127.0.0.1:53682/callback"


class MemoryTokenStorage:
    """The SDK's ``TokenStorage`` protocol, in memory: tokens and the registered client."""

    def __init__(self, client_info: OAuthClientInformationFull | None = None) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info = client_info

    async def get_tokens(self) -> OAuthToken | None:
        """The stored tokens, if any."""
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        """Keep ``tokens``."""
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        """The registered client, if any."""
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        """Keep the registered client."""
        self.client_info = client_info


class Person(Protocol):
    """Who answers the browser side of the flow: the SDK's redirect and callback handlers."""

    async def redirect(self, url: str) -> None:
        """Open the authorization URL ``url`` and go through sign-in and consent."""

    async def callback(self) -> AuthorizationCodeResult:
        """What arrived at the redirect URI. Raises ``RuntimeError`` when no code came back."""


class ScriptedSignIn:
    """The SDK's redirect and callback handlers, played by ``OAuthUser`` answering ``decision``.

    ``callback`` raises ``RuntimeError`` when Bastion redirected back without a code.
    """

    def __init__(self, username: str, password: str, decision: str = "approve") -> None:
        self.user = OAuthUser(username, password)
        self.decision = decision
        self.redirected_to: str | None = None
        self.authorization_urls: list[str] = []

    async def redirect(self, url: str) -> None:
        """Open ``url`` as the person would and remember where Bastion sent the browser."""
        self.authorization_urls.append(url)
        self.redirected_to = await asyncio.to_thread(self.user.authorize, url, decision=self.decision)

    async def callback(self) -> AuthorizationCodeResult:
        """What arrived at the redirect URI: the code, state and issuer (RFC 9207)."""
        if self.redirected_to is None or not self.redirected_to.startswith(CALLBACK):
            raise RuntimeError(f"the browser was not sent back to the client: {self.redirected_to}")
        params = query_of(self.redirected_to)
        if "code" not in params:
            raise RuntimeError(f"authorization failed: {params.get('error')}: {params.get('error_description')}")
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


def oauth_http_client(
    url: str, person: Person, storage: MemoryTokenStorage, *, client_metadata_url: str | None = None
) -> httpx2.AsyncClient:
    """An HTTP client for the MCP endpoint ``url`` that signs in with OAuth when challenged.

    With ``client_metadata_url`` the client identifies itself by that Client ID Metadata
    Document (when the server supports them) instead of registering.
    """
    metadata = OAuthClientMetadata(
        redirect_uris=[CALLBACK],
        client_name="Bastion demo client",
        token_endpoint_auth_method="none",  # noqa: S106 - a method name, not a password
        grant_types=["authorization_code", "refresh_token"],
    )
    auth = OAuthClientProvider(
        url, metadata, storage, person.redirect, person.callback, client_metadata_url=client_metadata_url
    )
    return httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30.0))

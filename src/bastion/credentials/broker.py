"""Credential sources: the upstream ``Authorization`` for one caller on one route.

Step 10 of the request path (docs/architecture.md, "Credentials"): the forward stage asks the route's source
for the caller's header, sends, and on an upstream 401 asks it to ``renew`` once and
sends again. Two sources:

- ``UserTokens``: the caller's own OAuth tokens for the upstream, from the vault,
  refreshed ``refresh_margin_s`` before they expire (one refresh per user at a time, in this
  process and, through ``TokenVault.refreshing``, across the replicas sharing the vault). Not
  connected, or the refresh token refused: ``UpstreamConnectionRequired`` (-32042) pointing at
  the portal's connect page.
- ``ExchangedTokens``: a token minted per user by RFC 8693 token exchange.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol
from weakref import WeakValueDictionary

from bastion.credentials.exchange import TokenExchange
from bastion.credentials.upstream_oauth import UpstreamOAuthClient
from bastion.credentials.vault import TokenSet, TokenVault
from bastion.errors import BastionError, ConnectionExpired, UpstreamConnectionRequired, UpstreamError, VaultError
from bastion.ids import new_id
from bastion.principal import Principal
from bastion.upstream.http import UpstreamResponse

__all__ = ["CredentialSource", "ExchangedTokens", "UserTokens", "send_with_credential"]

_log = logging.getLogger("bastion.credentials")


class CredentialSource(Protocol):
    """Where a route's upstream credential comes from. ``kind`` is the audit record's
    ``upstream.credential_kind``."""

    kind: str

    async def header(self, principal: Principal) -> dict[str, str]:
        """The headers that carry ``principal``'s credential upstream. Raises ``BastionError``."""
        ...

    async def renew(self, principal: Principal, rejected: dict[str, str]) -> dict[str, str]:
        """After the upstream refused ``rejected`` (401): fresh headers, or ``BastionError``."""
        ...

    def refused(self) -> BastionError:
        """The error for a call the upstream refused even after ``renew``."""
        ...


async def send_with_credential(
    source: CredentialSource | None,
    principal: Principal | None,
    send: Callable[[dict[str, str] | None], Awaitable[UpstreamResponse]],
) -> UpstreamResponse:
    """``send(credential)`` with ``principal``'s credential from ``source``; on a 401 renew it once
    and send again (MCP 2025-11-25 basic/authorization: a 401 means the token is not accepted).
    A second 401 raises ``source.refused()``. Without a source, ``send(None)`` once.

    Raises ``UpstreamConnectionRequired`` (not connected), ``BastionError`` from the source.
    """
    if source is None:
        return await send(None)
    if principal is None:
        raise source.refused()
    credential = await source.header(principal)
    response = await send(credential)
    if response.status != 401:
        return response
    await response.aclose()
    credential = await source.renew(principal, credential)
    response = await send(credential)
    if response.status == 401:
        await response.aclose()
        raise source.refused()
    return response


class UserTokens:
    """Each user's own tokens for one route's upstream (``kind`` ``"oauth_user"``).

    ``connect_url`` is the portal page that connects the route; ``title`` how the
    route is named to people; ``clock`` returns epoch seconds.
    """

    kind = "oauth_user"

    def __init__(
        self,
        client: UpstreamOAuthClient,
        vault: TokenVault,
        *,
        connect_url: str,
        title: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.vault = vault
        self.route = client.route
        self.connect_url = connect_url
        self._title = title
        self._margin_s = client.settings.refresh_margin_s
        self._clock = clock
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    def refused(self) -> UpstreamConnectionRequired:
        """The upstream refused a freshly refreshed token: the person must connect again."""
        return self.connection_required(again=True)

    def connection_required(self, *, again: bool = False) -> UpstreamConnectionRequired:
        """The -32042 error that sends the person to the connect page."""
        verb = "Reconnect" if again else "Connect"
        return UpstreamConnectionRequired(
            f"{verb} {self._title} in Bastion before using it: open the link to sign in there.",
            url=self.connect_url,
            elicitation_id=new_id(),
        )

    async def header(self, principal: Principal) -> dict[str, str]:
        """``principal``'s bearer header, refreshed first when it expires within the margin.

        Raises ``UpstreamConnectionRequired`` when not connected (or the refresh token was
        refused), ``UpstreamAuthorizationError``/``UpstreamUnavailable`` when a needed
        refresh fails for another reason (the tokens are kept).
        """
        tokens = await self._load(principal.key)
        if tokens.expires_at is not None and tokens.expires_at - self._margin_s <= self._clock():
            tokens = await self._refresh(principal.key, tokens.access_token)
        return _bearer(tokens)

    async def renew(self, principal: Principal, rejected: dict[str, str]) -> dict[str, str]:
        """Refresh after the upstream refused ``rejected`` (unless another request already did)."""
        rejected_token = rejected.get("authorization", "").removeprefix("Bearer ")
        return _bearer(await self._refresh(principal.key, rejected_token))

    async def _load(self, owner: str) -> TokenSet:
        try:
            tokens = await self.vault.get(owner, self.route)
        except VaultError as exc:  # a key was dropped or the row altered: connect again
            _log.error("route %s: stored upstream tokens cannot be opened: %s", self.route, exc.message)
            tokens = None
        if tokens is None:
            raise self.connection_required()
        return tokens

    async def _refresh(self, owner: str, stale_access_token: str) -> TokenSet:
        lock = self._locks.get(owner)
        if lock is None:
            lock = self._locks[owner] = asyncio.Lock()
        async with lock, self.vault.refreshing(owner, self.route):
            tokens = await self._load(owner)
            if tokens.access_token != stale_access_token:
                return tokens  # refreshed by another request (or replica) meanwhile
            try:
                fresh = await self.client.refresh(tokens)
            except ConnectionExpired as exc:
                _log.info("route %s: %s", self.route, exc.message)
                await self.vault.delete(owner, self.route)
                raise self.connection_required(again=True) from None
            await self.vault.put(owner, self.route, fresh, now=self._clock())
            return fresh


class ExchangedTokens:
    """Tokens minted per user by RFC 8693 token exchange (``kind`` ``"token_exchange"``)."""

    kind = "token_exchange"

    def __init__(self, exchange: TokenExchange) -> None:
        self._exchange = exchange

    async def header(self, principal: Principal) -> dict[str, str]:
        """The exchanged token's bearer header (cached by ``TokenExchange`` until near expiry)."""
        return (await self._exchange.token_for(principal)).header()

    async def renew(self, principal: Principal, rejected: dict[str, str]) -> dict[str, str]:
        """Drop the cached token and exchange again."""
        self._exchange.forget(principal.key)
        return (await self._exchange.token_for(principal)).header()

    def refused(self) -> UpstreamError:
        """The upstream refused a freshly exchanged token."""
        return UpstreamError("the upstream refused the exchanged token")


def _bearer(tokens: TokenSet) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens.access_token}"}

"""Signing in through an OpenID Connect provider: ``GET /oauth/sign-in/provider`` and ``GET /oauth/callback``.

The sign-in page links each configured provider to ``/oauth/sign-in/provider``
with the pending authorization request. That step checks the request belongs to
this browser (the ``__Host-`` browser cookie), keeps the sign-in's ``state``,
``nonce`` and PKCE verifier server-side (``FederatedSignIn``, by the digest of
``state``) and sends the browser to the provider. The provider sends it back to
``/oauth/callback``: the ``state`` is taken (single use) and must have been
started by the same browser, so a callback carried to another browser (login
CSRF, OpenID Connect Core 1.0 section 3.1.2.7) or replayed is refused; ``iss`` is
checked (RFC 9207); the code is redeemed and the ID token verified
(``OpenIDProvider.sign_in``). Then the flow goes on as after a password sign-in:
consent, then the code to the MCP client. Every refusal is an audit record.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bastion.errors import IdentityProviderError, OAuthError
from bastion.oauth.authorize_endpoint import BROWSER_COOKIE, AuthorizeEndpoint
from bastion.oauth.context import NO_STORE, ServerContext
from bastion.oauth.pages import error_page
from bastion.oauth.records import FederatedSignIn, PendingAuthorization, digest
from bastion.oauth.requests import single_params

__all__ = ["ProviderSignInEndpoint"]

_EXPIRED = "This sign-in has expired or was already used; start again from your application."
_MAX_ERROR_CHARS = 64


class ProviderSignInEndpoint:
    """Serves the two legs of a sign-in at an identity provider; ``authorize`` finishes the flow."""

    def __init__(self, context: ServerContext, authorize: AuthorizeEndpoint) -> None:
        self._ctx = context
        self._authorize = authorize

    async def start(self, request: Request) -> Response:
        """Send the browser to the provider named by ``provider`` for the request ``transaction``."""
        ctx = self._ctx
        try:
            params = single_params(request.query_params.multi_items())
        except OAuthError as exc:
            return await self._refuse(exc.description, None)
        pending = await ctx.store.get_pending(params.get("transaction", ""), ctx.clock())
        browser = request.cookies.get(BROWSER_COOKIE)
        if pending is None or browser is None or digest(browser) != pending.browser:
            return await self._refuse("start again from your application", pending)
        provider = ctx.providers.get(params.get("provider", ""))
        if provider is None:
            return await self._refuse("no such identity provider", pending)
        state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        try:
            url = await provider.authorization_url(state=state, nonce=nonce, code_verifier=verifier)
        except IdentityProviderError as exc:
            await self._audit(pending, "temporarily_unavailable", provider.name, exc.message)
            return self._authorize.sign_in_form(pending, error=exc.message, status_code=502)
        expires_at = min(pending.expires_at, ctx.clock() + ctx.settings.request_ttl)
        await ctx.store.put_federated(
            digest(state), FederatedSignIn(pending.id, provider.name, nonce, verifier, pending.browser, expires_at)
        )
        return RedirectResponse(url, status_code=303, headers=NO_STORE)

    async def callback(self, request: Request) -> Response:
        """Finish a sign-in the provider sent back (OpenID Connect Core section 3.1.2.5 and 3.1.2.6)."""
        ctx = self._ctx
        try:
            params = single_params(request.query_params.multi_items())
        except OAuthError as exc:
            return await self._refuse(exc.description, None)
        state = params.get("state")
        sign_in = await ctx.store.take_federated(digest(state), ctx.clock()) if state else None
        browser = request.cookies.get(BROWSER_COOKIE)
        if sign_in is None or browser is None or digest(browser) != sign_in.browser:
            return await self._refuse("the sign-in's state is unknown, used, expired or from another browser", None)
        pending = await ctx.store.get_pending(sign_in.pending_id, ctx.clock())
        provider = ctx.providers.get(sign_in.provider)
        if pending is None or provider is None:
            return await self._refuse("the authorization request has expired", pending)
        try:
            await provider.check_issuer(params.get("iss"))
            if "error" in params:
                error = params["error"][:_MAX_ERROR_CHARS]
                shown = f" ({error})" if error.isprintable() else ""
                raise IdentityProviderError(f"{provider.name}: the provider did not sign you in{shown}")
            code = params.get("code")
            if not code:
                raise IdentityProviderError(f"{provider.name}: the provider sent no code")
            identity, details = await provider.sign_in(
                code=code, code_verifier=sign_in.code_verifier, nonce=sign_in.nonce
            )
        except IdentityProviderError as exc:
            await self._audit(pending, "access_denied", provider.name, exc.message)
            return self._authorize.sign_in_form(pending, error=exc.message)
        return await self._authorize.finish_sign_in(pending, identity, details)

    async def _refuse(self, reason: str, pending: PendingAuthorization | None) -> Response:
        """An error page for a request that cannot go on (nothing to redirect to), and its audit record."""
        client_id, route = (pending.client_id, pending.route) if pending else (None, None)
        await self._authorize.audit_refusal(
            "oauth/sign-in", OAuthError("invalid_request", reason), client_id, route, {"problem": reason}
        )
        return error_page(title="This sign-in has expired", message=_EXPIRED, status_code=400)

    async def _audit(self, pending: PendingAuthorization, error: str, provider: str, problem: str) -> None:
        await self._authorize.audit_refusal(
            "oauth/sign-in",
            OAuthError(error, problem),
            pending.client_id,
            pending.route,
            {"provider": provider, "problem": problem},
        )

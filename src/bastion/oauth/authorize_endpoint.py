"""The browser side of the authorization code flow: ``/oauth/authorize``, sign-in and consent.

OAuth 2.1 section 4.1 with the MCP security best practices against confused
deputies (MCP 2025-11-25, "Confused Deputy Problem"):

- the client and its redirect URI are checked before anything else; if either is
  wrong the user sees an error page and is never redirected (RFC 6749 section 4.1.2.1);
- the request then waits server-side (``PendingAuthorization``), bound to the browser
  that started it by a ``__Host-`` cookie, and every form echoes a CSRF token;
- the consent page names the client, its redirect host, the route and the scopes;
  a consent is remembered per user, client and route (until revoked);
- the code goes back with ``state`` and ``iss`` (RFC 9207) and is single use.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bastion.errors import AuditUnavailable, OAuthError
from bastion.oauth.clients import redirect_uri_matches
from bastion.oauth.context import ServerContext, read_form, redirect_with
from bastion.oauth.metadata import ENDPOINTS
from bastion.oauth.pages import consent_page, error_page, set_cookie, sign_in_page
from bastion.oauth.records import AuthorizationCode, Consent, PendingAuthorization, UserIdentity, digest
from bastion.oauth.requests import check_code_challenge, requested_scopes, single_params
from bastion.oauth.users import SignInThrottle
from bastion.principal import USERS_FILE_IDP

__all__ = ["BROWSER_COOKIE", "PORTAL_CLIENT_ID", "SIGN_IN_COOKIE", "AuthorizeEndpoint"]

BROWSER_COOKIE = "__Host-bastion-browser"
SIGN_IN_COOKIE = "__Host-bastion-sign-in"
#: The pseudo-client of a sign-in started at the portal: no code, no consent, back to the portal.
#: Not a URL and not a generated id, so no registered client can carry it.
PORTAL_CLIENT_ID = "bastion portal"
_FORM_LIMIT = 16 * 1024


class AuthorizeEndpoint:
    """Serves ``GET /oauth/authorize``, ``POST /oauth/sign-in`` and ``POST /oauth/consent``.

    Password sign-ins are throttled per username (``SignInThrottle`` on the context's rate
    counter: 5 attempts that did not succeed in 5 minutes).
    """

    def __init__(self, context: ServerContext) -> None:
        self._ctx = context
        self._throttle = SignInThrottle(context.rates)

    async def authorize(self, request: Request) -> Response:
        """Validate an authorization request (RFC 6749 section 4.1.1) and show sign-in or consent."""
        ctx = self._ctx
        try:
            params = single_params(request.query_params.multi_items())
            client = await ctx.clients.find(params.get("client_id", ""))
            redirect_uri = params.get("redirect_uri", "")
            if not redirect_uri_matches(client.redirect_uris, redirect_uri):
                raise OAuthError("invalid_request", "redirect_uri is not registered for this client")
        except OAuthError as exc:
            await self.audit_refusal("oauth/authorize", exc, request.query_params.get("client_id"), None)
            return error_page(title="This sign-in link is not valid", message=exc.description, status_code=400)
        state = params.get("state")
        route = None
        try:
            if params.get("response_type") != "code":
                raise OAuthError("unsupported_response_type", "response_type must be code")
            challenge = check_code_challenge(params)
            route, resource = ctx.resources.route_for(params.get("resource"))
            scopes = requested_scopes(params.get("scope"), ctx.settings.scopes, default=ctx.settings.default_scopes)
            now = ctx.clock()
            if state is not None and not await ctx.store.claim_state(
                client.client_id, state, now + ctx.settings.request_ttl
            ):
                raise OAuthError("invalid_request", "state was already used")
            if ctx.users is None and not ctx.providers:
                raise OAuthError("temporarily_unavailable", "no sign-in method is configured")
        except OAuthError as exc:
            await self.audit_refusal("oauth/authorize", exc, client.client_id, route, params)
            return redirect_with(
                redirect_uri,
                {"error": exc.error, "error_description": exc.description, "state": state, "iss": ctx.issuer},
            )
        browser = request.cookies.get(BROWSER_COOKIE) or secrets.token_urlsafe(32)
        pending = PendingAuthorization(
            id=secrets.token_urlsafe(24),
            client_id=client.client_id,
            client_name=client.name,
            redirect_uri=redirect_uri,
            state=state,
            code_challenge=challenge,
            route=route,
            resource=resource,
            scopes=scopes,
            browser=digest(browser),
            csrf_token=secrets.token_urlsafe(24),
            expires_at=now + ctx.settings.request_ttl,
            unverified_client=not client.verified,
        )
        await ctx.store.put_pending(pending)
        user = await self._signed_in(request)
        if user is None:
            response = self.sign_in_form(pending)
        else:
            await ctx.store.set_pending_user(pending.id, user)
            response = await self._consent_or_code(pending, user)
        set_cookie(response, BROWSER_COOKIE, browser, max_age_s=ctx.settings.request_ttl)
        return response

    async def portal_sign_in(self, request: Request) -> Response:
        """Sign in without an application (``GET /portal/sign-in``): the same sign-in page and
        methods; afterwards the browser goes back to the portal with the sign-in cookie set."""
        ctx = self._ctx
        portal = ctx.base_url + ENDPOINTS["portal"]
        if await self._signed_in(request) is not None:
            return RedirectResponse(portal, status_code=303)
        if ctx.users is None and not ctx.providers:
            return error_page(title="Sign-in is not available", message="no sign-in method is configured",
                              status_code=400)  # fmt: skip
        browser = request.cookies.get(BROWSER_COOKIE) or secrets.token_urlsafe(32)
        now = ctx.clock()
        pending = PendingAuthorization(
            id=secrets.token_urlsafe(24),
            client_id=PORTAL_CLIENT_ID,
            client_name="the Bastion portal",
            redirect_uri=portal,
            state=None,
            code_challenge="",
            route="",
            resource="",
            scopes=(),
            browser=digest(browser),
            csrf_token=secrets.token_urlsafe(24),
            expires_at=now + ctx.settings.request_ttl,
        )
        await ctx.store.put_pending(pending)
        response = self.sign_in_form(pending)
        set_cookie(response, BROWSER_COOKIE, browser, max_age_s=ctx.settings.request_ttl)
        return response

    async def sign_in(self, request: Request) -> Response:
        """Check the sign-in form (local users file) and go on to consent."""
        ctx = self._ctx
        form, pending = await self._pending_from_form(request, "oauth/sign-in")
        if pending is None:
            return error_page(title="This sign-in has expired", message=form, status_code=400)
        if ctx.users is None:
            return error_page(title="Sign-in is not available", message="no local users file", status_code=400)
        username = str(form.get("username", ""))[:256]
        now = ctx.clock()
        wait_s = await self._throttle.attempt(username, now)
        if wait_s is not None:
            minutes = max(1, math.ceil(wait_s / 60))
            shown = f"Too many failed sign-ins for this username. Try again in {minutes} minutes."
            return await self._refuse_password(pending, username, "too many failed sign-ins", shown, 429)
        # argon2id takes tens of milliseconds of CPU: off the event loop.
        user = await asyncio.to_thread(ctx.users.verify, username, str(form.get("password", ""))[:1024])
        if user is None:
            shown = "The username or password is not right."
            return await self._refuse_password(pending, username, "bad username or password", shown, 401)
        await self._throttle.succeeded(username)
        identity = UserIdentity(user.sub, USERS_FILE_IDP, user.email, user.name, tuple(user.groups))
        return await self.finish_sign_in(pending, identity, {"username": username})

    async def _refuse_password(
        self, pending: PendingAuthorization, username: str, reason: str, shown: str, status_code: int
    ) -> Response:
        """Audit a refused password sign-in (``access_denied``, ``reason``) and show the form again."""
        exc = OAuthError("access_denied", reason)
        await self.audit_refusal("oauth/sign-in", exc, pending.client_id, pending.route, {"username": username})
        return self.sign_in_form(pending, error=shown, username=username, status_code=status_code)

    async def finish_sign_in(
        self, pending: PendingAuthorization, identity: UserIdentity, parameters: dict[str, Any]
    ) -> Response:
        """Record that ``identity`` signed in for ``pending`` (an audit record with ``parameters``),
        remember the sign-in in this browser (``__Host-`` cookie) and go on to consent."""
        ctx = self._ctx
        await ctx.audit.record(
            "oauth/sign-in", effect="allow", reason=None, client_id=pending.client_id, route=pending.route,
            user=identity, parameters=parameters,
        )  # fmt: skip
        cookie = secrets.token_urlsafe(32)
        await ctx.store.put_sign_in(digest(cookie), identity, ctx.clock() + ctx.settings.sign_in_ttl)
        await ctx.store.set_pending_user(pending.id, identity)
        response = await self._consent_or_code(pending, identity)
        set_cookie(response, SIGN_IN_COOKIE, cookie, max_age_s=ctx.settings.sign_in_ttl)
        return response

    async def consent(self, request: Request) -> Response:
        """Apply the user's approve/deny decision and redirect to the client."""
        ctx = self._ctx
        form, pending = await self._pending_from_form(request, "oauth/consent")
        if pending is None:
            return error_page(title="This sign-in has expired", message=form, status_code=400)
        if pending.user is None:
            await self.audit_refusal(
                "oauth/consent", OAuthError("invalid_request", "nobody has signed in"), pending.client_id, pending.route
            )
            return error_page(title="This sign-in has expired", message="nobody has signed in", status_code=400)
        taken = await ctx.store.take_pending(pending.id, ctx.clock())
        if taken is None or taken.client_id == PORTAL_CLIENT_ID:
            return error_page(title="This sign-in has expired", message="the request was already used", status_code=400)
        if form.get("decision") != "approve":
            exc = OAuthError("access_denied", "the user denied the request")
            await self.audit_refusal("oauth/consent", exc, taken.client_id, taken.route, user=pending.user)
            return redirect_with(
                taken.redirect_uri,
                {"error": exc.error, "error_description": exc.description, "state": taken.state, "iss": ctx.issuer},
            )
        return await self._issue_code(taken, pending.user, remembered=False)

    async def _consent_or_code(self, pending: PendingAuthorization, user: UserIdentity) -> Response:
        ctx = self._ctx
        if pending.client_id == PORTAL_CLIENT_ID:  # signed in at the portal: nothing to consent to
            await ctx.store.take_pending(pending.id, ctx.clock())
            return RedirectResponse(pending.redirect_uri, status_code=303)
        consent = await ctx.store.get_consent(user.sub, pending.client_id, pending.route)
        if consent is not None and set(pending.scopes) <= set(consent.scopes):
            taken = await ctx.store.take_pending(pending.id, ctx.clock())
            if taken is not None:
                return await self._issue_code(taken, user, remembered=True)
        redirect = urlsplit(pending.redirect_uri)
        return consent_page(
            action=ctx.base_url + ENDPOINTS["consent"],
            transaction=pending.id,
            csrf_token=pending.csrf_token,
            client_name=pending.client_name,
            client_id=pending.client_id,
            redirect_host=redirect.netloc or redirect.scheme,
            resource_name=ctx.route_titles.get(pending.route, pending.route),
            resource_uri=pending.resource,
            scopes=pending.scopes,
            user_label=user.label,
            unverified_client=pending.unverified_client,
            form_action=(f"{redirect.scheme}://{redirect.netloc}" if redirect.netloc else f"{redirect.scheme}:",),
        )

    async def _issue_code(self, pending: PendingAuthorization, user: UserIdentity, *, remembered: bool) -> Response:
        ctx = self._ctx
        code = secrets.token_urlsafe(32)
        grant = pending.grant(user)
        parameters = {
            "redirect_uri": pending.redirect_uri,
            "resource": pending.resource,
            "scope": " ".join(grant.scopes),
            "decision": "remembered consent" if remembered else "approve",
        }
        try:
            await ctx.audit.record(
                "oauth/authorize", effect="allow", reason=None, client_id=pending.client_id, route=pending.route,
                user=user, parameters=parameters,
            )  # fmt: skip
        except AuditUnavailable:
            return redirect_with(
                pending.redirect_uri,
                {"error": "temporarily_unavailable", "error_description": "the audit log is unavailable",
                 "state": pending.state, "iss": ctx.issuer},
            )  # fmt: skip
        if not remembered:  # remembered only once the approval is on record
            await ctx.store.put_consent(Consent(user.sub, pending.client_id, pending.route, grant.scopes, ctx.clock()))
        await ctx.store.put_code(
            digest(code),
            AuthorizationCode(grant, pending.redirect_uri, pending.code_challenge, ctx.clock() + ctx.settings.code_ttl),
        )
        return redirect_with(pending.redirect_uri, {"code": code, "state": pending.state, "iss": ctx.issuer})

    def sign_in_form(
        self, pending: PendingAuthorization, *, error: str | None = None, username: str = "", status_code: int = 401
    ) -> Response:
        """The sign-in page for ``pending``: a button per identity provider, the password form when
        a users file is configured, and ``error`` (then answered with ``status_code``)."""
        ctx = self._ctx
        start = ctx.base_url + ENDPOINTS["provider_sign_in"]
        providers = [
            (provider.settings.display_name, f"{start}?{urlencode({'transaction': pending.id, 'provider': name})}")
            for name, provider in ctx.providers.items()
        ]
        return sign_in_page(
            action=ctx.base_url + ENDPOINTS["sign_in"],
            transaction=pending.id,
            csrf_token=pending.csrf_token,
            client_name=pending.client_name,
            error=error,
            username=username,
            status_code=status_code if error else 200,
            providers=providers,
            password_form=ctx.users is not None,
        )

    async def _signed_in(self, request: Request) -> UserIdentity | None:
        cookie = request.cookies.get(SIGN_IN_COOKIE)
        if not cookie:
            return None
        return await self._ctx.store.get_sign_in(digest(cookie), self._ctx.clock())

    async def _pending_from_form(self, request: Request, method: str) -> tuple[Any, PendingAuthorization | None]:
        """The form and its pending request, or ``(reason, None)`` after auditing the refusal (an
        ``invalid_request`` deny for ``method``): the Origin must be Bastion's (or absent), the
        browser cookie must be the one that started the request, the CSRF token must match."""
        pending: PendingAuthorization | None = None
        reason, form = await self._form(request)
        if reason is None:
            pending = await self._ctx.store.get_pending(str(form.get("transaction", "")), self._ctx.clock())
            browser = request.cookies.get(BROWSER_COOKIE)
            csrf = str(form.get("csrf_token", "")).encode("utf-8", "surrogatepass")
            if pending is None or browser is None or digest(browser) != pending.browser:
                reason = "start again from your application"
            elif not secrets.compare_digest(csrf, pending.csrf_token.encode()):
                reason = "the form's security token is not right; start again from your application"
            else:
                return form, pending
        client_id, route = (pending.client_id, pending.route) if pending else (None, None)
        await self.audit_refusal(method, OAuthError("invalid_request", reason), client_id, route)
        return reason, None

    async def _form(self, request: Request) -> tuple[str | None, dict[str, str]]:
        """``(problem, fields)``: a form from another site, too large, or with a repeated field
        is a problem."""
        origin = request.headers.get("origin")
        if origin is not None and origin != self._ctx.origin:
            return "the form was sent from another site", {}
        try:
            fields = await read_form(request, _FORM_LIMIT, max_fields=16)
            if fields is None:
                return "the form is too large", {}
            return None, single_params(fields)
        except OAuthError as exc:
            return exc.description, {}

    async def audit_refusal(
        self,
        method: str,
        exc: OAuthError,
        client_id: str | None,
        route: str | None,
        parameters: Any = None,
        *,
        user: UserIdentity | None = None,
    ) -> None:
        """Record a refused step (``effect: deny``, ``reason`` the OAuth error code)."""
        await self._ctx.audit.record(
            method, effect="deny", reason=exc.error, client_id=client_id, route=route, user=user,
            parameters=parameters if isinstance(parameters, dict) else None,
        )  # fmt: skip

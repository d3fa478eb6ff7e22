"""The portal: where a signed-in person sees their routes and connects upstreams.

    GET  /portal                       the routes this person may use, with connection status and
                                       the tools they may call on each (risk, approval needed)
    GET  /portal/activity              their recent calls from the audit log (``bastion.portal.activity``)
    GET  /portal/connect/{route}       "Connect <route>?" (names where the browser will go)
    POST /portal/connect/{route}       start the upstream's authorization code flow (303 to it)
    GET  /portal/callback              the upstream's redirect back: redeem, seal, store
    POST /portal/disconnect/{route}    revoke at the upstream (RFC 7009) and delete
    GET  /portal/api/routes            the same list as JSON, for clients and agents
    GET  /portal/client-metadata.json  Bastion's Client ID Metadata Document for upstream servers

A person is signed in by the authorization server's ``__Host-`` sign-in cookie (the same
one as for consent; ``/portal/sign-in`` signs in without an application). Forms carry a
token derived from that cookie and must come from Bastion's own origin. A connection is
bound to the person and to the browser that started it: the callback is refused in any
other browser or for anyone else. The JSON API also takes a Bastion access token
(``Authorization: Bearer``) issued for any of Bastion's routes.

Every connect and disconnect, allowed or refused, is an audit record (``upstream/connect``,
``upstream/disconnect``), and so is every search of other people's calls (``audit/search``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bastion.audit.store import ActivityReader
from bastion.catalog.guard import DefinitionGuard
from bastion.credentials.broker import UserTokens
from bastion.credentials.vault import TokenVault
from bastion.errors import AuthenticationError, BastionError, OAuthError, UpstreamAuthorizationError
from bastion.identity.verifier import TokenVerifier
from bastion.oauth.auditing import OAuthAudit
from bastion.oauth.authorize_endpoint import SIGN_IN_COOKIE
from bastion.oauth.context import read_form
from bastion.oauth.pages import error_page, render_page
from bastion.oauth.records import UserIdentity, digest
from bastion.oauth.requests import single_params
from bastion.oauth.store import AuthorizationFlowStore
from bastion.policy import PolicyEngine
from bastion.portal.activity import ActivityLog, activity_filters
from bastion.principal import Principal
from bastion.transport.routes import RouteRuntime

__all__ = ["PORTAL_PATHS", "Portal", "guarded_api", "guarded_page"]

_log = logging.getLogger("bastion.portal")

PORTAL_PATHS = {
    "home": "/portal",
    "activity": "/portal/activity",
    "sign_in": "/portal/sign-in",
    "connect": "/portal/connect/{route}",
    "disconnect": "/portal/disconnect/{route}",
    "callback": "/portal/callback",
    "api_routes": "/portal/api/routes",
    "client_metadata": "/portal/client-metadata.json",
    "approvals": "/portal/approvals",
    "approval": "/portal/approvals/{approval_id}",
    "api_approvals": "/portal/api/approvals",
    "api_approval": "/portal/api/approvals/{approval_id}",
}

_FORM_LIMIT = 4096
Handler = Callable[[Request], Awaitable[Response]]


def _when(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M UTC")


class Portal:
    """The portal's pages and API over ``routes`` (the gateway's ``RouteRuntime`` list).

    ``store`` holds the sign-ins; ``vault`` the connections (``None`` when no route has any);
    ``engine`` decides which routes a person may use (a route
    is listed when its tool catalog is not known yet or when at least one of its tools may be
    listed for the person), which of its tools are listed and whether they need approval, and
    who may search everyone's calls; ``verifier`` checks bearer tokens for the API;
    ``audit_reader`` reads the audit log for the activity page (``None``: no activity page);
    ``clock`` returns epoch seconds.
    """

    def __init__(
        self,
        *,
        base_url: str,
        issuer: str,
        store: AuthorizationFlowStore,
        routes: Sequence[RouteRuntime],
        engine: PolicyEngine,
        verifier: TokenVerifier,
        audit: OAuthAudit,
        vault: TokenVault | None,
        audit_reader: ActivityReader | None = None,
        guards: Mapping[str, DefinitionGuard] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = base_url
        self._guards = guards or {}
        self._origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
        self._issuer = issuer
        self._store = store
        self._route_list = routes  # the gateway's: a reload of the routes changes it in place
        self._engine = engine
        self._verifier = verifier
        self._audit = audit
        self._vault = vault
        self._activity = ActivityLog(audit_reader, issuer=issuer) if audit_reader is not None else None
        self._clock = clock

    def url(self, name: str, **values: str) -> str:
        """The absolute URL of portal path ``name`` (``PORTAL_PATHS``), e.g. ``url("connect", route="notes")``."""
        return self._base + PORTAL_PATHS[name].format(**values)

    def routes(self) -> list[BaseRoute]:
        """The portal's Starlette routes (mounted at the root of the app)."""
        page = guarded_page
        activity = [Route(PORTAL_PATHS["activity"], page(self.activity), methods=["GET"])] if self._activity else []
        return [
            Route(PORTAL_PATHS["home"], page(self.home), methods=["GET"]),
            *activity,
            Route(PORTAL_PATHS["connect"], page(self.connect_page), methods=["GET"]),
            Route(PORTAL_PATHS["connect"], page(self.connect), methods=["POST"]),
            Route(PORTAL_PATHS["callback"], page(self.callback), methods=["GET"]),
            Route(PORTAL_PATHS["disconnect"], page(self.disconnect), methods=["POST"]),
            Route(PORTAL_PATHS["api_routes"], guarded_api(self.api_routes), methods=["GET"]),
            Route(PORTAL_PATHS["client_metadata"], self.client_metadata, methods=["GET"]),
        ]

    # who is here
    async def signed_in(self, request: Request) -> tuple[UserIdentity, str] | None:
        """The signed-in person and their sign-in cookie, or ``None``."""
        cookie = request.cookies.get(SIGN_IN_COOKIE)
        if not cookie:
            return None
        user = await self._store.get_sign_in(digest(cookie), self._clock())
        return None if user is None else (user, cookie)

    def person(self, user: UserIdentity) -> Principal:
        """The signed-in person as a ``Principal`` (Bastion's issuer, ``auth_method`` ``portal``)."""
        return Principal(
            kind="User", sub=user.sub, issuer=self._issuer, auth_method="portal", expires_at=0,
            email=user.email, name=user.name, groups=user.groups, idp=user.idp,
        )  # fmt: skip

    @staticmethod
    def csrf(cookie: str) -> str:
        """The forms' token: HMAC-SHA-256 of a fixed label keyed with the sign-in cookie."""
        return hmac.new(cookie.encode(), b"bastion-portal-form", hashlib.sha256).hexdigest()

    def sign_in_first(self, return_to: str) -> Response:
        """The 401 page asking to sign in first, then come back to ``return_to``."""
        return render_page(
            "error.html",
            status_code=401,
            form_action=(),
            title="Sign in to Bastion first",
            message=f"Open {self.url('sign_in')} to sign in, then come back to {return_to}.",
        )

    async def form_ok(self, request: Request, cookie: str) -> bool:
        """True when the POST comes from Bastion's own pages with this person's form token."""
        return await self.posted_fields(request, cookie) is not None

    async def posted_fields(self, request: Request, cookie: str) -> dict[str, str] | None:
        """The fields of a form POSTed from Bastion's own pages (``Origin`` absent or Bastion's)
        carrying this person's form token, each field once (at most 8); ``None`` otherwise."""
        origin = request.headers.get("origin")
        if origin is not None and origin != self._origin:
            return None
        try:
            fields = await read_form(request, _FORM_LIMIT, max_fields=8)
            params = single_params(fields) if fields is not None else {}
        except OAuthError:  # too many or repeated fields
            return None
        token = params.get("csrf_token", "")
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self.csrf(cookie).encode()):
            return None
        return params

    async def _posted_form(
        self, request: Request, method: str, refused: str, *, form_refused: str | None = None
    ) -> tuple[str, UserTokens, UserIdentity, str] | Response:
        """The checks of a portal form POST on ``/portal/<action>/{route}``: a route with per-user
        OAuth, a signed-in person, and a form from Bastion's own pages (``_form``). Returns
        ``(route name, source, person, sign-in cookie)``, or the 400 error page titled ``refused``
        (``form_refused`` for a forged form, when given) after a deny record of ``method``."""
        name = request.path_params["route"]
        source = self._source(name)
        signed_in = await self.signed_in(request)
        if source is None or signed_in is None:
            problem = "route" if source is None else "sign-in"
            known = name if name in self._routes else None
            await self._record(method, "deny", "invalid_request", known, None, problem=problem)
            return error_page(title=refused, message="Open the portal and try again.", status_code=400)
        user, cookie = signed_in
        if not await self.form_ok(request, cookie):
            await self._record(method, "deny", "invalid_request", name, user, problem="form")
            return error_page(title=form_refused or refused, message="The form did not come from Bastion.",
                              status_code=400)  # fmt: skip
        return name, source, user, cookie

    def _source(self, name: str) -> UserTokens | None:
        route = self._routes.get(name)
        source = route.credentials if route is not None else None
        return source if isinstance(source, UserTokens) else None

    # pages
    async def home(self, request: Request) -> Response:
        """The list of routes with their status and connect / disconnect buttons."""
        signed_in = await self.signed_in(request)
        if signed_in is None:
            return self.sign_in_first(self.url("home"))
        user, cookie = signed_in
        routes = await self._listing(self.person(user))
        notice = None
        connected = request.query_params.get("connected")
        if connected in self._routes:
            notice = f"{self._title(connected)} is connected."
        elif request.query_params.get("disconnected") in self._routes:
            notice = f"{self._title(request.query_params['disconnected'])} is disconnected."
        return render_page(
            "portal.html", status_code=200, form_action=(), title="Your MCP servers",
            user_label=user.label, routes=routes, csrf_token=self.csrf(cookie), notice=notice,
            activity_url=self.url("activity") if self._activity else None, approvals_url=self.url("approvals"),
        )  # fmt: skip

    async def activity(self, request: Request) -> Response:
        """This person's recent calls (everyone's, for an auditor), filtered by the query string
        (``bastion.portal.activity``). An auditor's search beyond their own calls is an audit record."""
        signed_in = await self.signed_in(request)
        if signed_in is None or self._activity is None:
            return self.sign_in_first(self.url("activity"))
        user = signed_in[0]
        person = self.person(user)
        auditor = self._engine.may_search_audit(person, now=self._clock())
        filters = activity_filters(request.query_params, routes=self._routes.keys(), auditor=auditor)
        if auditor and filters.subject != person.sub:
            await self._record("audit/search", "allow", None, filters.route, user, subject=filters.subject or "*",
                               tool=filters.tool or "", decision=filters.effect or "")  # fmt: skip
        calls = await self._activity.calls(person.sub, filters, auditor=auditor)
        return render_page(
            "activity.html", status_code=200, form_action=(),
            title="Everyone's recent calls" if auditor and not filters.subject else "Recent calls",
            user_label=user.label, auditor=auditor, filters=filters, calls=calls,
            routes=[(name, self._title(name)) for name in self._routes], portal_url=self.url("home"),
            action=self.url("activity"),
        )  # fmt: skip

    async def connect_page(self, request: Request) -> Response:
        """ "Connect <route>?": where the browser will go, and a button that POSTs back here."""
        name = request.path_params["route"]
        source = self._source(name)
        if source is None:
            return error_page(title="Nothing to connect", message=f"{name} has no connection to make.", status_code=404)
        signed_in = await self.signed_in(request)
        if signed_in is None:
            return self.sign_in_first(self.url("connect", route=name))
        user, cookie = signed_in
        try:
            server = await source.client.server()
        except UpstreamAuthorizationError as exc:
            return error_page(
                title=f"{self._title(name)} cannot be connected now", message=exc.message, status_code=502
            )
        target = urlsplit(server.authorization_endpoint)
        return render_page(
            "connect.html",
            status_code=200,
            # Chromium applies form-action to the redirect that follows the POST
            form_action=(f"{target.scheme}://{target.netloc}",),
            title=f"Connect {self._title(name)}?",
            server_host=target.netloc,
            upstream_url=source.client.upstream_url,
            user_label=user.label,
            action=self.url("connect", route=name),
            portal_url=self.url("home"),
            csrf_token=self.csrf(cookie),
        )

    async def connect(self, request: Request) -> Response:
        """Start the upstream's authorization code flow for this person in this browser."""
        posted = await self._posted_form(request, "upstream/connect", "This connection cannot start")
        if isinstance(posted, Response):
            return posted
        name, source, user, cookie = posted
        try:
            url = await source.client.begin(self.person(user).key, digest(cookie))
        except UpstreamAuthorizationError as exc:
            await self._record("upstream/connect", "deny", "server_error", name, user, problem=exc.message)
            return error_page(
                title=f"{self._title(name)} cannot be connected now", message=exc.message, status_code=502
            )
        return RedirectResponse(url, status_code=303, headers={"cache-control": "no-store"})

    async def callback(self, request: Request) -> Response:
        """The upstream's redirect back (RFC 6749 section 4.1.2): check, redeem, seal, store."""
        params = request.query_params
        state = params.get("state") or ""
        signed_in = await self.signed_in(request)
        pending = await self._vault.take_pending(digest(state), self._clock()) if self._vault and state else None
        source = self._source(pending.route) if pending is not None else None
        user = signed_in[0] if signed_in else None
        if (
            pending is None
            or source is None
            or signed_in is None
            or user is None
            or pending.browser != digest(signed_in[1])
            or self.person(user).key != pending.owner
        ):
            route = pending.route if pending is not None else None
            await self._record("upstream/connect", "deny", "invalid_request", route, user, problem="state")
            return error_page(
                title="This connection has expired",
                message="Start again from the portal, in the browser where you are signed in to Bastion.",
                status_code=400,
            )
        title = self._title(pending.route)
        error = params.get("error")
        if error is not None or not params.get("code"):
            shown = error if error and error.isprintable() and len(error) < 64 else "no code"
            await self._record("upstream/connect", "deny", "access_denied", pending.route, user, problem=shown)
            return error_page(title=f"{title} was not connected", message=f"The server answered: {shown}.",
                              status_code=400)  # fmt: skip
        try:
            tokens = await source.client.finish(pending, code=params["code"], iss=params.get("iss"))
        except BastionError as exc:
            await self._record("upstream/connect", "deny", "server_error", pending.route, user, problem=exc.message)
            return error_page(title=f"{title} was not connected", message=exc.message, status_code=502)
        await source.vault.put(pending.owner, pending.route, tokens, now=self._clock())
        await self._record("upstream/connect", "allow", None, pending.route, user, issuer=tokens.issuer,
                           scope=tokens.scope or "", client=tokens.client_id)  # fmt: skip
        return RedirectResponse(self.url("home") + f"?connected={pending.route}", status_code=303)

    async def disconnect(self, request: Request) -> Response:
        """Revoke this person's upstream tokens at the server (RFC 7009) and delete them."""
        posted = await self._posted_form(
            request, "upstream/disconnect", "Nothing to disconnect", form_refused="Nothing was disconnected"
        )
        if isinstance(posted, Response):
            return posted
        name, source, user, _ = posted
        owner = self.person(user).key
        tokens = await source.vault.get(owner, name)
        revoked = await source.client.revoke(tokens) if tokens is not None else False
        deleted = await source.vault.delete(owner, name)
        await self._record("upstream/disconnect", "allow", None, name, user, revoked=revoked, deleted=deleted)
        return RedirectResponse(self.url("home") + f"?disconnected={name}", status_code=303)

    # the API
    @property
    def _routes(self) -> dict[str, RouteRuntime]:
        """The routes serving now, by name."""
        return {route.name: route for route in self._route_list}

    async def api_routes(self, request: Request) -> Response:
        """``{"user": sub, "routes": [...]}`` for the signed-in person or the bearer of a Bastion token.

        Each route: ``name``, ``title``, ``url``, ``credential`` (``oauth_user``,
        ``token_exchange``, ``static`` or ``none``), ``connected`` (bool, or ``null`` when
        there is nothing to connect), ``connected_at`` / ``expires_at`` (epoch seconds or
        ``null``), ``connect_url``, ``tools``: the tools this caller may call, each ``{"name",
        "risk", "approval"}`` (``approval``: ``always``, ``some`` or ``no``, whatever the
        arguments), or ``null`` until the route's tools are known (after its first use).
        401 with ``WWW-Authenticate: Bearer`` otherwise.
        """
        principal = await self.api_principal(request)
        if principal is None:
            return JSONResponse(
                {"error": "invalid_token", "error_description": "sign in or present a Bastion access token"},
                status_code=401,
                headers={"www-authenticate": 'Bearer error="invalid_token"', "cache-control": "no-store"},
            )
        routes = await self._listing(principal)
        for item in routes:
            item.pop("disconnect_url", None)
            item["connected_at"], item["expires_at"] = item.pop("connected_epoch"), item.pop("expires_epoch")
        return JSONResponse({"user": principal.sub, "routes": routes}, headers={"cache-control": "no-store"})

    async def api_principal(self, request: Request, *, cookie: bool = True) -> Principal | None:
        """The caller of an API request: the bearer of a Bastion access token for any route, else
        (when ``cookie``) the signed-in person; ``None`` when neither."""
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
            for route in self._routes.values():
                try:
                    return await self._verifier.authenticate(token, route.resource_uri)
                except AuthenticationError:
                    continue
            return None
        if not cookie:
            return None
        signed_in = await self.signed_in(request)
        return self.person(signed_in[0]) if signed_in else None

    async def client_metadata(self, _: Request) -> Response:
        """Bastion's Client ID Metadata Document (OAuth Client ID Metadata Document draft, section 4):
        the client id is this document's own URL."""
        document = {
            "client_id": self.url("client_metadata"),
            "client_name": "Bastion MCP gateway",
            "client_uri": self._base,
            "redirect_uris": [self.url("callback")],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        return JSONResponse(document, headers={"cache-control": "public, max-age=3600"})

    # helpers
    def _title(self, name: str) -> str:
        route = self._routes.get(name)
        return (route.settings.title or name) if route is not None else name

    async def _listing(self, principal: Principal) -> list[dict[str, Any]]:
        """The routes ``principal`` may use, with what the page and the API show of each."""
        connections = await self._vault.connections(principal.key) if self._vault is not None else {}
        listed = []
        for name, route in self._routes.items():
            tools = self._tools(principal, route)
            if tools is not None and not tools:
                continue
            source = route.credentials
            static = route.settings.http is not None and bool(route.settings.http.headers)
            kind = source.kind if source is not None else "static" if static else "none"
            connection = connections.get(name)
            listed.append({
                "name": name,
                "title": self._title(name),
                "url": route.resource_uri,
                "credential": kind,
                "connected": (connection is not None) if kind == "oauth_user" else None,
                "connected_at": _when(connection.connected_at) if connection else None,
                "connected_epoch": connection.connected_at if connection else None,
                "expires_epoch": connection.expires_at if connection else None,
                "connect_url": self.url("connect", route=name) if kind == "oauth_user" else None,
                "disconnect_url": self.url("disconnect", route=name) if kind == "oauth_user" else None,
                "tools": tools,
            })  # fmt: skip
        return listed

    def _tools(self, principal: Principal, route: RouteRuntime) -> list[dict[str, str]] | None:
        """The tools of ``route`` that ``principal`` may call, by name: ``{"name", "risk", "approval"}``
        (``approval`` as ``PolicyEngine.approval_need_for``: ``always``, ``some`` or ``no``). ``None``
        when the route's catalog is not known yet (nothing is asked of the upstream for a listing);
        an empty list means the route is not for this person (or is blocked). A tool held by the
        route's definition guard (quarantined, hidden by a finding) is left out."""
        catalog = route.catalog_for(principal)
        if catalog.stale or not catalog.tools:
            return None
        guard = self._guards.get(route.name)
        if guard is not None and guard.blocked:
            return []
        refs = []
        for name in sorted(catalog.tools):
            verdict = guard.cached("tool", name, catalog.hashes.get(name, "")) if guard is not None else None
            if verdict is not None and not verdict.served:
                continue  # quarantined or hidden by a finding: not offered (pins, issue 15)
            try:
                ref = catalog.ref(route.name, name)
            except ValueError:
                continue
            if ref is not None:
                refs.append(ref)
        context = {"arguments": {}, "scopes": list(principal.scopes), "client_id": principal.client_id or "",
                   "session": "", "time": int(self._clock()), "ip": "", "approved": False}  # fmt: skip
        listable = self._engine.filter_listable(principal, "tools/call", refs, context)
        return [
            {"name": ref.name, "risk": str(ref.attrs.get("risk", "destructive")),
             "approval": self._engine.approval_need_for(principal, ref, context)}
            for ref, listed in zip(refs, listable, strict=True) if listed
        ]  # fmt: skip

    async def _record(
        self,
        method: str,
        effect: str,
        reason: str | None,
        route: str | None,
        user: UserIdentity | None,
        **parameters: Any,
    ) -> None:
        await self._audit.record(
            method, effect="allow" if effect == "allow" else "deny", reason=reason, client_id=None, route=route,
            user=user, parameters=parameters,
        )  # fmt: skip


def guarded_page(handler: Handler, *, title: str = "The portal is unavailable") -> Handler:
    """``handler`` failing closed: any exception is logged and answered with a 503 error page
    titled ``title`` saying nothing was changed."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception:  # noqa: BLE001 - fail closed: an error page, nothing changed
            _log.exception("portal page %s failed", request.url.path)
            return error_page(title=title, message="Nothing was changed. Try again later.", status_code=503)

    return run


def guarded_api(handler: Handler) -> Handler:
    """``handler`` failing closed: any exception is logged and answered with a JSON 500
    ``{"error": "server_error"}``."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception:  # noqa: BLE001 - fail closed
            _log.exception("portal API %s failed", request.url.path)
            return JSONResponse({"error": "server_error"}, status_code=500, headers=NO_STORE)

    return run


NO_STORE = {"cache-control": "no-store"}
"""The header of every portal API answer: nothing in it is for a cache."""


def api_error(status: int, code: str, description: str) -> JSONResponse:
    """A portal API refusal: ``{"error": code, "error_description": description}`` with ``status``."""
    return JSONResponse({"error": code, "error_description": description}, status_code=status, headers=NO_STORE)


def api_unauthorized() -> JSONResponse:
    """The portal API's 401 for a missing or bad bearer token (RFC 6750 section 3)."""
    return JSONResponse(
        {"error": "invalid_token", "error_description": "present a Bastion access token"},
        status_code=401,
        headers={"www-authenticate": 'Bearer error="invalid_token"', **NO_STORE},
    )

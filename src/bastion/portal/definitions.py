"""The administrators' review of definitions: what each route holds back, and approving it.

    GET  /portal/definitions                 the routes whose definitions this person may approve,
                                             with how many wait (and whether the route is blocked)
    GET  /portal/definitions/{route}         each held definition: why (new, changed, a finding),
                                             its findings, the word diff of its description and
                                             title against its pin, the other members that differ;
                                             an approve form with a reason
    POST /portal/definitions/{route}         approve what the page showed (form: csrf_token, shown,
                                             decision, reason)
    GET  /portal/api/definitions/{route}     the same as JSON (bearer token or sign-in)
    POST /portal/api/definitions/{route}     ``{"approve": [{"kind", "name", "sha256"}, ...],
                                             "reason": "...", "whole_route": bool}``; bearer token
                                             only (no cookie: no CSRF)

``bastion tools approve`` uses the API, so this process stays the audit log's only writer and the
approval takes effect at once (``DefinitionGuard.approve``). Who may approve is policy:
``Action::"definitions/approve"`` on ``Server::"<route>"``, granted only by permits that name it
(``PolicyEngine.may_approve_definitions``); to anyone else a route's review page does not exist
(404), and a refused API call is recorded (``definition/refused``). An approval pins exactly the
hashes shown (the form's ``shown`` digest, the API's list): a definition that changed after it
was shown stays held. The pages have the portal's protections (``bastion.portal.app``: sign-in,
form token, Bastion's own origin, no framing, no caching).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bastion.catalog.guard import DefinitionGuard
from bastion.catalog.pins import DEFINITION_KINDS, PinnedItem, PinStore
from bastion.catalog.review import ReviewItem, as_json, review, shown_digest
from bastion.catalog.verdicts import KIND_LABELS
from bastion.oauth.context import read_body
from bastion.oauth.pages import error_page, render_page
from bastion.policy import PolicyEngine
from bastion.portal.app import NO_STORE, Portal, api_error, api_unauthorized, guarded_api, guarded_page
from bastion.principal import Principal

__all__ = ["DEFINITION_PATHS", "DefinitionPages"]

DEFINITION_PATHS = {
    "index": "/portal/definitions",
    "route": "/portal/definitions/{route}",
    "api_route": "/portal/api/definitions/{route}",
}

_JSON_LIMIT = 256 * 1024
_WHY = {
    "new": "New: it was not there when the route's definitions were approved.",
    "drift": "Changed since it was approved.",
    "finding": "The definition scanner found something in it.",
    "unpinned": "Not approved yet: the route's definitions have never been approved.",
}


def _line(change: Any) -> str:
    shown = {"added": change.after, "removed": change.before}.get(change.op)
    if change.op == "changed":
        return f"changed {change.path}: {json.dumps(change.before)} → {json.dumps(change.after)}"
    return f"{change.op} {change.path}: {json.dumps(shown)}"


class DefinitionPages:
    """The review pages and API over ``guards`` (one per route) and ``store``, decided by ``engine``."""

    def __init__(
        self,
        portal: Portal,
        guards: Mapping[str, DefinitionGuard],
        store: PinStore,
        engine: PolicyEngine,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._portal = portal
        self._guards = guards
        self._store = store
        self._engine = engine
        self._clock = clock

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes (mounted beside the portal's)."""
        page = functools.partial(guarded_page, title="Definitions are unavailable")
        return [
            Route(DEFINITION_PATHS["index"], page(self.index), methods=["GET"]),
            Route(DEFINITION_PATHS["route"], page(self.show), methods=["GET"]),
            Route(DEFINITION_PATHS["route"], page(self.approve), methods=["POST"]),
            Route(DEFINITION_PATHS["api_route"], guarded_api(self.api_show), methods=["GET"]),
            Route(DEFINITION_PATHS["api_route"], guarded_api(self.api_approve), methods=["POST"]),
        ]

    def _may(self, person: Principal, route: str) -> bool:
        return route in self._guards and self._engine.may_approve_definitions(person, route, now=self._clock()).allowed

    async def _review(self, route: str) -> list[ReviewItem]:
        return review(await self._store.pins(route), await self._store.held(route))

    # pages
    async def index(self, request: Request) -> Response:
        """The routes this person may approve definitions of, with how many wait."""
        signed_in = await self._portal.signed_in(request)
        if signed_in is None:
            return self._portal.sign_in_first(DEFINITION_PATHS["index"])
        person = self._portal.person(signed_in[0])
        routes = []
        for name, guard in self._guards.items():
            if self._may(person, name):
                held = await self._store.held(name)
                routes.append({"name": name, "url": DEFINITION_PATHS["route"].format(route=name), "held": len(held),
                               "blocked": guard.blocked})  # fmt: skip
        return render_page("definitions.html", status_code=200, form_action=(), title="Definitions to review",
                           user_label=signed_in[0].label, routes=routes)  # fmt: skip

    async def show(self, request: Request, *, notice: str | None = None, notice_kind: str = "") -> Response:
        """A route's held definitions with their diffs, and the approve form."""
        route = request.path_params["route"]
        url = DEFINITION_PATHS["route"].format(route=route)
        signed_in = await self._portal.signed_in(request)
        if signed_in is None:
            return self._portal.sign_in_first(url)
        user, cookie = signed_in
        if not self._may(self._portal.person(user), route):
            return self._not_found()
        items = await self._review(route)
        return render_page(
            "definition_review.html", status_code=200, form_action=(), title=f"Definitions of {route}",
            user_label=user.label, route=route, blocked=self._guards[route].blocked,
            items=[self._shown(item) for item in items], may_approve=bool(items), action=url,
            csrf_token=self._portal.csrf(cookie), shown=shown_digest([item.item for item in items]),
            index_url=DEFINITION_PATHS["index"], notice=notice, notice_kind=notice_kind,
        )  # fmt: skip

    async def approve(self, request: Request) -> Response:
        """The approve form's POST: pin what the page showed, if it is still what is held."""
        route = request.path_params["route"]
        signed_in = await self._portal.signed_in(request)
        guard = self._guards.get(route)
        if signed_in is None or guard is None:
            return error_page(title="Nothing was approved", message="Sign in to Bastion and try again.",
                              status_code=400)  # fmt: skip
        user, cookie = signed_in
        person = self._portal.person(user)
        fields = await self._portal.posted_fields(request, cookie)
        if fields is None or fields.get("decision") != "approve" or not self._may(person, route):
            await guard.record_refused(person, "form" if fields is None else "policy_denied")
            return error_page(title="Nothing was approved", message="The form did not come from Bastion, or "
                              "approving this route's definitions is not yours to do.", status_code=400)  # fmt: skip
        items = [item.item for item in await self._review(route)]
        if shown_digest(items) != fields.get("shown"):
            return await self.show(request, notice="The definitions changed since the page was shown: nothing was "
                                   "approved. Review them again.", notice_kind="error")  # fmt: skip
        decision = self._engine.may_approve_definitions(person, route, now=self._clock())
        await guard.approve(items, approver=person, policy_ids=decision.policy_ids, reason=fields.get("reason", ""),
                            whole_route=True)  # fmt: skip
        return RedirectResponse(DEFINITION_PATHS["route"].format(route=route), status_code=303, headers=NO_STORE)

    # the API
    async def api_show(self, request: Request) -> Response:
        """``{"route", "blocked", "held": [...]}`` (``bastion.catalog.review.as_json``); 404 for a route
        this caller may not approve."""
        person = await self._portal.api_principal(request)
        if person is None:
            return api_unauthorized()
        route = request.path_params["route"]
        if not self._may(person, route):
            return api_error(404, "unknown_route", "No such route, or its definitions are not yours to approve")
        items = await self._review(route)
        body = {"route": route, "blocked": self._guards[route].blocked, "held": [as_json(item) for item in items]}
        return JSONResponse(body, headers=NO_STORE)

    async def api_approve(self, request: Request) -> Response:
        """Approve as the bearer of a Bastion access token: ``{"approve": [{"kind", "name", "sha256"}],
        "reason": "...", "whole_route": true|false}`` (``whole_route``: the route's catalog as approved,
        every kind's baseline starts: ``DefinitionGuard.approve``) -> 200 ``{"route", "approved": [...],
        "left": [...]}`` (``left``: the items not held with that hash any more); 400 malformed; 401 no
        token; 403 policy (recorded)."""
        person = await self._portal.api_principal(request, cookie=False)
        if person is None:
            return api_unauthorized()
        route = request.path_params["route"]
        guard = self._guards.get(route)
        if guard is None:
            return api_error(404, "unknown_route", f"No route {route!r}")
        items = _items(await read_body(request, _JSON_LIMIT))
        if items is None:
            return api_error(400, "invalid_request", 'send {"approve": [{"kind", "name", "sha256"}], "reason": "..."}')
        wanted, reason, whole_route = items
        decision = self._engine.may_approve_definitions(person, route, now=self._clock())
        if not decision.allowed:
            await guard.record_refused(person, "policy_denied")
            return api_error(403, "policy_denied", f"No policy allows you to approve the definitions of {route!r}")
        pins = await guard.approve(wanted, approver=person, policy_ids=decision.policy_ids, reason=reason,
                                   whole_route=whole_route)  # fmt: skip
        approved = {(pin.kind, pin.name, pin.sha256) for pin in pins}
        shown = [{"kind": k, "name": n, "sha256": s} for k, n, s in wanted if (k, n, s) in approved]
        left = [{"kind": k, "name": n, "sha256": s} for k, n, s in wanted if (k, n, s) not in approved]
        return JSONResponse({"route": route, "approved": shown, "left": left}, headers=NO_STORE)

    # helpers
    @staticmethod
    def _shown(item: ReviewItem) -> dict[str, Any]:
        held = item.held
        return {
            "kind_label": KIND_LABELS[held.kind].capitalize(),
            "name": held.name,
            "why": _WHY.get(held.reason, held.reason),
            "served": held.served,
            "sha256": held.sha256,
            "pinned": item.pin,
            "findings": list(held.findings),
            "text": list(item.diff.text.items()),
            "changes": [_line(change) for change in item.diff.changes],
        }

    @staticmethod
    def _not_found() -> Response:
        return error_page(title="No such route to review",
                          message="It does not exist, or its definitions are not yours to approve.",
                          status_code=404)  # fmt: skip


def _items(body: bytes | None) -> tuple[list[PinnedItem], str, bool] | None:
    """The items, reason and ``whole_route`` flag of an API approval, or ``None`` when malformed."""
    try:
        payload = json.loads(body) if body is not None else None
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("approve"), list):
        return None
    reason = payload.get("reason", "")
    items: list[PinnedItem] = []
    for entry in payload["approve"]:
        if not isinstance(entry, dict):
            return None
        kind, name, sha256 = entry.get("kind"), entry.get("name"), entry.get("sha256")
        if kind not in DEFINITION_KINDS or not isinstance(name, str) or not isinstance(sha256, str):
            return None
        items.append((kind, name, sha256))
    whole_route = payload.get("whole_route", False)
    if not isinstance(reason, str) or not isinstance(whole_route, bool) or not items:
        return None
    return items, reason, whole_route

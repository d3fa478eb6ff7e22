"""The approvers' inbox: pending approval requests, decided in the portal or through its API.

    GET  /portal/approvals                  the inbox: requests this person may decide, and their own
    GET  /portal/approvals/{id}             one request: the call, its arguments (redacted), the
                                            policies that asked; approve / deny with a reason
    POST /portal/approvals/{id}             the decision (form: csrf_token, decision, reason)
    GET  /portal/api/approvals              the same lists as JSON (bearer token or sign-in)
    GET  /portal/api/approvals/{id}         one request as JSON
    POST /portal/api/approvals/{id}         the decision as JSON ``{"decision": "approve"|"deny",
                                            "reason": "..."}``; bearer token only (no cookie: no CSRF)

``bastion approvals approve|deny`` uses the API. The pages have the consent page's protections
(``bastion.oauth.pages``: no framing, strict CSP, no caching) and the portal's form checks
(Bastion's own origin, a token derived from the sign-in cookie). A request is shown to its
requester, to whoever decided it and to whoever policy lets decide it; to anyone else it does
not exist (404). Who may decide
is the desk's rule (``ApprovalDesk.may_decide``); every decision and every refused attempt is
an audit record (``approval/approved``, ``approval/denied``, ``approval/refused``).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bastion.approvals.desk import ApprovalDesk
from bastion.approvals.model import ApprovalRequest
from bastion.errors import DecisionRefused
from bastion.oauth.context import read_body
from bastion.oauth.pages import error_page, render_page
from bastion.portal.app import NO_STORE, PORTAL_PATHS, Portal, api_error, api_unauthorized, guarded_api, guarded_page
from bastion.principal import Principal

__all__ = ["ApprovalPages"]

_JSON_LIMIT = 4096


def _time_left(request: ApprovalRequest, now: float) -> str:
    if request.status not in ("pending", "approved"):
        return request.status
    left = int(request.expires_at - now)
    if left <= 0:
        return "expired"
    return f"{left // 60} min left" if left >= 60 else f"{left} s left"


class ApprovalPages:
    """The inbox pages and API of ``desk``, on ``portal``'s sign-in and form checks."""

    def __init__(self, portal: Portal, desk: ApprovalDesk, *, clock: Callable[[], float] = time.time) -> None:
        self._portal = portal
        self._desk = desk
        self._clock = clock

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes (mounted beside the portal's)."""
        page, api = functools.partial(guarded_page, title="Approvals are unavailable"), guarded_api
        return [
            Route(PORTAL_PATHS["approvals"], page(self.inbox), methods=["GET"]),
            Route(PORTAL_PATHS["approval"], page(self.show), methods=["GET"]),
            Route(PORTAL_PATHS["approval"], page(self.decide), methods=["POST"]),
            Route(PORTAL_PATHS["api_approvals"], api(self.api_list), methods=["GET"]),
            Route(PORTAL_PATHS["api_approval"], api(self.api_show), methods=["GET"]),
            Route(PORTAL_PATHS["api_approval"], api(self.api_decide), methods=["POST"]),
        ]

    # what a person sees
    def view(self, request: ApprovalRequest) -> dict[str, Any]:
        """A request as the pages and the API show it (arguments as the audit log keeps them)."""
        now = self._clock()
        binding = request.binding
        return {
            "id": request.id,
            "kind": request.kind,
            "status": "expired" if request.status == "pending" and now >= request.expires_at else request.status,
            "requester": request.requester_label,
            "client_id": request.client_id,
            "route": binding.route,
            "tool": binding.tool,
            "risk": request.risk,
            "classification": request.classification,
            "arguments": request.arguments,
            "arguments_sha256": binding.arguments_sha256,
            "policy_ids": list(request.policy_ids),
            "created_at": request.created_at,
            "expires_at": request.expires_at,
            "approver": request.approver,
            "reason": request.reason,
            "url": self._desk.status_url(request.id),
        }

    async def _visible(self, person: Principal, approval_id: str) -> tuple[ApprovalRequest, bool] | None:
        """The request and whether ``person`` may decide it, or ``None`` when they may not see it."""
        request = await self._desk.store.get(approval_id)
        if request is None:
            return None
        if not self._desk.may_see(person, request):
            return None
        return request, self._desk.may_decide(person, request)

    async def _lists(self, person: Principal) -> tuple[list[ApprovalRequest], list[ApprovalRequest]]:
        pending = await self._desk.store.list("pending", limit=500)
        now = self._clock()
        live = [r for r in pending if now < r.expires_at]
        to_decide = [r for r in live if self._desk.may_decide(person, r)]
        recent = await self._desk.store.list(None, limit=500)
        own = [r for r in recent if self._desk.is_requester(person, r)][:50]
        return to_decide, own

    # pages
    async def inbox(self, request: Request) -> Response:
        """The requests waiting for this person's decision, and their own requests."""
        signed_in = await self._portal.signed_in(request)
        if signed_in is None:
            return self._portal.sign_in_first(self._portal.url("approvals"))
        person = self._portal.person(signed_in[0])
        to_decide, own = await self._lists(person)
        now = self._clock()

        def item(r: ApprovalRequest) -> dict[str, Any]:
            return {**self.view(r), "time_left": _time_left(r, now)}

        return render_page(
            "approvals.html", status_code=200, form_action=(), title="Approvals",
            user_label=signed_in[0].label, to_decide=[item(r) for r in to_decide], own=[item(r) for r in own],
        )  # fmt: skip

    async def show(self, request: Request, *, notice: str | None = None, notice_kind: str = "") -> Response:
        """One request, with the approve / deny form when this person may decide it."""
        approval_id = request.path_params["approval_id"]
        signed_in = await self._portal.signed_in(request)
        if signed_in is None:
            return self._portal.sign_in_first(self._desk.status_url(approval_id))
        user, cookie = signed_in
        visible = await self._visible(self._portal.person(user), approval_id)
        if visible is None:
            return self._not_found()
        approval, may_decide = visible
        item = {**self.view(approval), "time_left": _time_left(approval, self._clock())}
        item["arguments_text"] = json.dumps(approval.arguments, indent=2, ensure_ascii=False, sort_keys=True)
        item["requested"] = _utc(approval.created_at)
        return render_page(
            "approval.html", status_code=200, form_action=(),
            title="Confirm your call?" if approval.kind == "confirm" else "Approve this call?",
            item=item, may_decide=may_decide, action=self._desk.status_url(approval_id),
            csrf_token=self._portal.csrf(cookie), inbox_url=self._portal.url("approvals"),
            notice=notice, notice_kind=notice_kind,
        )  # fmt: skip

    async def decide(self, request: Request) -> Response:
        """The approve / deny form's POST: the person's decision, with their reason."""
        approval_id = request.path_params["approval_id"]
        signed_in = await self._portal.signed_in(request)
        if signed_in is None:  # e.g. a cross-site form: the browser did not send the sign-in cookie
            await self._desk.record_refused_form(approval_id, None)
            return error_page(title="Nothing was decided", message="Sign in to Bastion and try again.",
                              status_code=400)  # fmt: skip
        user, cookie = signed_in
        person = self._portal.person(user)
        fields = await self._portal.posted_fields(request, cookie)
        if fields is None or fields.get("decision") not in ("approve", "deny"):
            await self._desk.record_refused_form(approval_id, person)
            return error_page(title="Nothing was decided", message="The form did not come from Bastion.",
                              status_code=400)  # fmt: skip
        try:
            await self._desk.decide(
                approval_id, approver=person, approve=fields["decision"] == "approve", reason=fields.get("reason", "")
            )
        except DecisionRefused as exc:
            if exc.status == 404:
                return self._not_found()
            return error_page(title="Nothing was decided", message=exc.message, status_code=exc.status)
        return RedirectResponse(self._desk.status_url(approval_id), status_code=303, headers=NO_STORE)

    # the API
    async def api_list(self, request: Request) -> Response:
        """``{"to_decide": [...], "own": [...]}`` for the bearer of a Bastion token or the signed-in person."""
        person = await self._portal.api_principal(request)
        if person is None:
            return api_unauthorized()
        to_decide, own = await self._lists(person)
        return JSONResponse(
            {"to_decide": [self.view(r) for r in to_decide], "own": [self.view(r) for r in own]}, headers=NO_STORE
        )

    async def api_show(self, request: Request) -> Response:
        """``{"approval": {...}, "may_decide": bool}``; 404 for a request this caller may not see."""
        person = await self._portal.api_principal(request)
        if person is None:
            return api_unauthorized()
        visible = await self._visible(person, request.path_params["approval_id"])
        if visible is None:
            return api_error(404, "unknown_approval", "No such approval request")
        return JSONResponse({"approval": self.view(visible[0]), "may_decide": visible[1]}, headers=NO_STORE)

    async def api_decide(self, request: Request) -> Response:
        """Decide as the bearer of a Bastion access token: ``{"decision": "approve"|"deny",
        "reason": "..."}`` -> 200 ``{"approval": {...}}``; 400 malformed; 401 no token; 403, 404,
        409 as ``DecisionRefused`` says (``{"error": code, "error_description": text}``)."""
        person = await self._portal.api_principal(request, cookie=False)
        if person is None:
            return api_unauthorized()
        body = await read_body(request, _JSON_LIMIT)
        try:
            payload = json.loads(body) if body is not None else None
        except ValueError:
            payload = None
        if (
            not isinstance(payload, dict)
            or payload.get("decision") not in ("approve", "deny")
            or not isinstance(payload.get("reason", ""), str)
        ):
            return api_error(400, "invalid_request", 'send {"decision": "approve" or "deny", "reason": "..."}')
        try:
            decided = await self._desk.decide(
                request.path_params["approval_id"], approver=person, approve=payload["decision"] == "approve",
                reason=payload.get("reason", ""),
            )  # fmt: skip
        except DecisionRefused as exc:
            return api_error(exc.status, exc.reason, exc.message)
        return JSONResponse({"approval": self.view(decided)}, headers=NO_STORE)

    # helpers
    @staticmethod
    def _not_found() -> Response:
        return error_page(title="No such approval request",
                          message="It does not exist, or it is not yours to see.", status_code=404)  # fmt: skip


def _utc(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch_s))

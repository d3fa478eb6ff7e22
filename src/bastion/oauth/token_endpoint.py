"""The machine side: ``/oauth/token`` (OAuth 2.1 section 3.2), ``/oauth/revoke`` (RFC 7009) and
``/oauth/register`` (RFC 7591), each answering in the OAuth JSON error form.

Client authentication (OAuth 2.1 section 2.4): a confidential client sends its
secret with HTTP Basic (``client_secret_basic``, RFC 6749 section 2.3.1: the id and
secret form-urlencoded first) or in the body (``client_secret_post``), never both;
a public client sends only ``client_id`` and proves possession with PKCE.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bastion.errors import AuditUnavailable, OAuthError
from bastion.oauth.clients import Client, registration_metadata
from bastion.oauth.context import NO_STORE, ServerContext, oauth_error_response, read_body, read_form
from bastion.oauth.records import digest
from bastion.oauth.requests import single_params

__all__ = ["TokenEndpoint"]

_BODY_LIMIT = 64 * 1024


class TokenEndpoint:
    """Serves the token, revocation and registration endpoints."""

    def __init__(self, context: ServerContext) -> None:
        self._ctx = context

    async def token(self, request: Request) -> Response:
        """Run an ``authorization_code`` or ``refresh_token`` grant; every answer is audited."""
        ctx = self._ctx
        client_id: str | None = None
        params: dict[str, str] = {}
        route: str | None = None
        try:
            params = await self._form(request)
            client = await self._client(request, params)
            client_id = client.client_id
            grant_type = params.get("grant_type")
            if grant_type == "authorization_code":
                issued = await ctx.grants.authorization_code(client, params)
            elif grant_type == "refresh_token":
                issued = await ctx.grants.refresh_token(client, params)
            else:
                raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
            route = issued.grant.route
        except OAuthError as exc:
            client_id = client_id or _claimed_client_id(request, params)
            await ctx.audit.record(
                "oauth/token", effect="deny", reason=exc.error, client_id=client_id, route=self._route(params),
                parameters=params,
            )  # fmt: skip
            return oauth_error_response(exc, headers=_basic_challenge(request, exc))
        try:
            await ctx.audit.record(
                "oauth/token", effect="allow", reason=None, client_id=client_id, route=route,
                user=issued.grant.user, parameters={**params, "scope": issued.body["scope"]},
            )  # fmt: skip
        except AuditUnavailable:
            await ctx.grants.revoke(client, str(issued.body["refresh_token"]))
            unavailable = OAuthError("temporarily_unavailable", "the audit log is unavailable")
            return oauth_error_response(unavailable, status=503)
        return JSONResponse(dict(issued.body), headers=NO_STORE)

    async def revoke(self, request: Request) -> Response:
        """RFC 7009 section 2: revoke a refresh token's grant; 200 whether or not the token was known."""
        ctx = self._ctx
        params: dict[str, str] = {}
        try:
            params = await self._form(request)
            client = await self._client(request, params)
            token = params.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
            family = await ctx.grants.revoke(client, token)
        except OAuthError as exc:
            await ctx.audit.record(
                "oauth/revoke", effect="deny", reason=exc.error, client_id=_claimed_client_id(request, params),
                route=None,
                parameters=params,
            )  # fmt: skip
            return oauth_error_response(exc, headers=_basic_challenge(request, exc))
        hint = params.get("token_type_hint") or ("refresh_token" if family else None)
        await ctx.audit.record(
            "oauth/revoke", effect="allow", reason=None, client_id=client.client_id, route=None,
            parameters={**params, "token_type_hint": hint},
        )  # fmt: skip
        return Response(status_code=200, headers=NO_STORE)

    async def register(self, request: Request) -> Response:
        """RFC 7591 section 3: register a client (only when dynamic registration is on)."""
        ctx = self._ctx
        try:
            if not ctx.settings.dynamic_registration:
                raise OAuthError("invalid_request", "dynamic client registration is disabled")
            raw = await read_body(request, _BODY_LIMIT)
            if raw is None:
                raise OAuthError("invalid_client_metadata", "the registration request is too large")
            try:
                body: Any = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise OAuthError("invalid_client_metadata", "the registration request is not JSON") from exc
            metadata, method = registration_metadata(body)
        except OAuthError as exc:
            await ctx.audit.record("oauth/register", effect="deny", reason=exc.error, client_id=None, route=None)
            disabled = exc.error == "invalid_request" and not ctx.settings.dynamic_registration
            return oauth_error_response(exc, status=403 if disabled else 400)
        client_id = "dcr-" + secrets.token_hex(16)
        answer: dict[str, Any] = {**metadata, "client_id": client_id, "client_id_issued_at": int(ctx.clock())}
        stored = dict(metadata)
        if method != "none":
            secret = secrets.token_urlsafe(32)
            stored["client_secret_digest"] = digest(secret)
            answer.update(client_secret=secret, client_secret_expires_at=0)
        await ctx.store.put_client(client_id, stored, ctx.clock())
        await ctx.audit.record(
            "oauth/register", effect="allow", reason=None, client_id=client_id, route=None,
            parameters={
                "client_name": metadata.get("client_name"),
                "redirect_uri": " ".join(metadata["redirect_uris"]),
            },
        )  # fmt: skip
        return JSONResponse({k: v for k, v in answer.items() if v is not None}, status_code=201, headers=NO_STORE)

    async def _form(self, request: Request) -> dict[str, str]:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
        fields = await read_form(request, _BODY_LIMIT, max_fields=32)
        if fields is None:
            raise OAuthError("invalid_request", "the request is too large")
        return single_params(fields)

    async def _client(self, request: Request, params: Mapping[str, str]) -> Client:
        """Authenticate the client (module docstring). Raises ``OAuthError("invalid_client")``."""
        basic = _basic_credentials(request.headers.get("authorization"))
        if basic is not None and "client_secret" in params:
            raise OAuthError("invalid_request", "use one client authentication method, not two")
        client_id, secret = basic if basic is not None else (params.get("client_id"), params.get("client_secret"))
        if not client_id:
            raise OAuthError("invalid_client", "client_id is required")
        if "client_id" in params and params["client_id"] != client_id:
            raise OAuthError("invalid_client", "client_id differs from the authenticated client")
        client = await self._ctx.clients.find(client_id)
        if not client.check_secret(secret):
            raise OAuthError("invalid_client", "client authentication failed")
        return client

    def _route(self, params: Mapping[str, str]) -> str | None:
        return self._ctx.resources.by_uri.get(params.get("resource", ""))


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "malformed Basic credentials") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials")
    return unquote_plus(client_id), unquote_plus(secret)


def _claimed_client_id(request: Request, params: Mapping[str, str]) -> str | None:
    """The client id a refused request claimed (form or HTTP Basic), for its audit record."""
    try:
        basic = _basic_credentials(request.headers.get("authorization"))
    except OAuthError:
        basic = None
    return basic[0] if basic is not None else params.get("client_id")


def _basic_challenge(request: Request, exc: OAuthError) -> dict[str, str]:
    """RFC 6749 section 5.2: a 401 to a client that used Basic carries a Basic challenge."""
    if exc.error == "invalid_client" and (request.headers.get("authorization") or "").lower().startswith("basic "):
        return {"www-authenticate": 'Basic realm="bastion"'}
    return {}

"""An upstream MCP server and its OAuth authorization server, scripted per test case: real HTTP on 127.0.0.1.

Starlette served by uvicorn on a real loopback socket, in a thread of the test process (plain http, or
TLS with a ``tests.support.pki`` leaf). Its base URL ``B`` is both the issuer and the upstream's origin:

    POST /mcp                                    401 ``WWW-Authenticate: Bearer resource_metadata="..."``
                                                 (200 for a live access token)
    GET  /.well-known/oauth-protected-resource/mcp and /.well-known/oauth-protected-resource
                                                 RFC 9728 metadata: resource ``B/mcp``, issuer ``B``
    GET  /.well-known/oauth-authorization-server RFC 8414 metadata (S256, revocation, registration)
    GET  /authorize                              302 to ``redirect_uri`` with ``code``, ``state`` (and
                                                 ``iss`` when advertised); checks client and PKCE method
    POST /token                                  ``authorization_code`` (checks client auth, redirect_uri,
                                                 S256 of the verifier, resource) and ``refresh_token``
    POST /register                               RFC 7591: a confidential client for client_secret_basic
    POST /revoke                                 RFC 7009 (client auth checked; the token stops working)

Every request is recorded (method, path, query, lowercase headers, form or JSON body). The behaviour is a
JSON script (``DEFAULT_SCRIPT`` keys) given at start, replaced key by key through ``PUT /control/script``
and started afresh through ``PUT /control/reset``; ``GET /control/requests`` returns the record. To
misbehave: ``metadata`` / ``prm`` overrides (``None`` deletes a key), ``metadata_body`` / ``prm_body`` (a
raw body, e.g. not JSON), ``prm_paths`` (which well-known paths serve it), ``prm_url`` (a path that also
serves it), ``challenge_metadata`` / ``challenge_scope`` (the 401's parameters), ``refresh_rotates``
(false: no ``refresh_token`` in refresh responses), and ``replies``: per path, answers ``{"status",
"json" | "body", "headers"}`` used (once each, in order) instead of the normal behaviour.

    with ScriptedAuthorizationServer({"clients": {"bastion": "secret"}}) as server:
        await server.script(replies={"/token": [{"status": 500, "body": "down"}]})
        [request] = await server.requests("/token")

Issued values carry recognisable prefixes (``sas-code-``, ``sas-at-``, ``sas-rt-``, ``sas-secret-``) so a
test can prove that no message repeats one (``SECRET_PREFIXES``).
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import httpx2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.pki import Pki

SECRET_PREFIXES = ("sas-code-", "sas-at-", "sas-rt-", "sas-secret-")

DEFAULT_SCRIPT: dict[str, Any] = {
    "metadata": {},  # overrides of the RFC 8414 document; None deletes a key
    "metadata_body": None,  # a raw body served instead of the document
    "prm": {},  # overrides of the RFC 9728 document
    "prm_body": None,
    "prm_paths": ["path", "root"],  # /.well-known/oauth-protected-resource/mcp, /.well-known/...-resource
    "challenge_metadata": True,  # the 401 names resource_metadata: the path-based URL (or "prm_url"), a URL
    "prm_url": None,
    "challenge_scope": None,
    "clients": {},  # client_id -> secret (None: public); registration adds to it
    "expires_in": 3600,
    "refresh_rotates": True,
    "replies": {},  # path -> [{"status", "json" | "body", "headers"}], consumed in order
}


@dataclass(frozen=True)
class Recorded:
    """One request the server received: ``form`` for a form body, ``json`` for a JSON body."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]
    json: Any

    def basic_credentials(self) -> tuple[str, str] | None:
        """The client id and secret of an ``Authorization: Basic`` header, each form-decoded (RFC 6749
        section 2.3.1), or ``None`` without one."""
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        client_id, _, secret = base64.b64decode(value).decode().partition(":")
        return unquote_plus(client_id), unquote_plus(secret)


def s256(verifier: str) -> str:
    """The RFC 7636 S256 code challenge of ``verifier`` (computed here, not by the code under test)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class _AuthorizationServer:
    """The server's state and handlers; runs on the server thread's event loop only."""

    def __init__(self, base: str, script: dict[str, Any]) -> None:
        self.base = base
        self.reset(script)

    def reset(self, script: dict[str, Any]) -> None:
        """Forget everything: requests, codes, tokens, registrations; start again from ``script``."""
        self.script = {**copy.deepcopy(DEFAULT_SCRIPT), **copy.deepcopy(script)}
        self.records: list[dict[str, Any]] = []
        self.codes: dict[str, dict[str, str]] = {}
        self.refresh_tokens: dict[str, dict[str, str]] = {}
        self.access_tokens: set[str] = set()

    def app(self) -> Starlette:
        """One route for every path: ``handle`` dispatches."""
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "PUT"])])

    async def handle(self, request: Request) -> Response:
        """Control requests, else record the request and answer: a queued reply, else the normal behaviour."""
        body = await request.body()
        path = request.url.path
        if path == "/control/script":
            self.script.update(json.loads(body))
            return JSONResponse({"ok": True})
        if path == "/control/reset":
            self.reset(json.loads(body))
            return JSONResponse({"ok": True})
        if path == "/control/requests":
            return JSONResponse(self.records)
        content_type = request.headers.get("content-type", "")
        form = dict(parse_qsl(body.decode(), keep_blank_values=True)) if "urlencoded" in content_type else {}
        document = json.loads(body) if "json" in content_type and body else None
        self.records.append({
            "method": request.method, "path": path, "query": dict(request.query_params),
            "headers": {k.lower(): v for k, v in request.headers.items()}, "form": form, "json": document,
        })  # fmt: skip
        queued = self.script["replies"].get(path) or []
        if queued:
            return _reply(queued.pop(0))
        handlers = {
            "/mcp": self.mcp, "/authorize": self.authorize, "/token": self.token, "/register": self.register,
            "/revoke": self.revoke, "/.well-known/oauth-authorization-server": self.metadata,
            "/.well-known/oauth-protected-resource/mcp": self.prm, "/.well-known/oauth-protected-resource": self.prm,
        }  # fmt: skip
        handler = handlers.get(path)
        if handler is None and path == self.script["prm_url"]:
            handler = self.prm
        return handler(request, form, document) if handler else JSONResponse({"error": "not_found"}, 404)

    def mcp(self, request: Request, form: dict[str, str], document: Any) -> Response:
        if request.headers.get("authorization", "").removeprefix("Bearer ") in self.access_tokens:
            return JSONResponse({"jsonrpc": "2.0", "id": 0, "result": {}})
        params = []
        named = self.script["challenge_metadata"]
        if named:
            path = self.script["prm_url"] or "/.well-known/oauth-protected-resource/mcp"
            params.append(f'resource_metadata="{named if isinstance(named, str) else self.base + path}"')
        if self.script["challenge_scope"] is not None:
            params.append(f'scope="{self.script["challenge_scope"]}"')
        challenge = "Bearer " + ", ".join(params) if params else "Bearer"
        return JSONResponse({"error": "unauthorized"}, 401, headers={"www-authenticate": challenge})

    def prm(self, request: Request, form: dict[str, str], document: Any) -> Response:
        where = "root" if request.url.path == "/.well-known/oauth-protected-resource" else "path"
        if request.url.path != self.script["prm_url"] and where not in self.script["prm_paths"]:
            return JSONResponse({"error": "not_found"}, 404)
        if self.script["prm_body"] is not None:
            return Response(self.script["prm_body"], 200, media_type="application/json")
        prm = {"resource": f"{self.base}/mcp", "authorization_servers": [self.base]}
        return JSONResponse(_merged(prm, self.script["prm"]))

    def metadata(self, request: Request, form: dict[str, str], document: Any) -> Response:
        if self.script["metadata_body"] is not None:
            return Response(self.script["metadata_body"], 200, media_type="application/json")
        metadata = {
            "issuer": self.base,
            "authorization_endpoint": f"{self.base}/authorize",
            "token_endpoint": f"{self.base}/token",
            "registration_endpoint": f"{self.base}/register",
            "revocation_endpoint": f"{self.base}/revoke",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        }
        return JSONResponse(_merged(metadata, self.script["metadata"]))

    def authorize(self, request: Request, form: dict[str, str], document: Any) -> Response:
        query = dict(request.query_params)
        client_id = query.get("client_id", "")
        if client_id not in self.script["clients"] and not client_id.startswith("https://"):
            return JSONResponse({"error": "unauthorized_client"}, 400)
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, 400)
        code = "sas-code-" + secrets.token_urlsafe(16)
        self.codes[code] = query
        answer = {"code": code, "state": query.get("state", "")}
        if self.script["metadata"].get("authorization_response_iss_parameter_supported"):
            answer["iss"] = self.base
        return Response(status_code=302, headers={"location": f"{query['redirect_uri']}?{urlencode(answer)}"})

    def _client(self, request: Request, form: dict[str, str]) -> str | None:
        """The authenticated client id (Basic for a confidential client, ``client_id`` for a public one)."""
        clients: dict[str, str | None] = self.script["clients"]
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
            return client_id if clients.get(client_id) == secret and secret else None
        client_id = form.get("client_id", "")
        public = client_id.startswith("https://") or (client_id in clients and clients[client_id] is None)
        return client_id if public else None

    def token(self, request: Request, form: dict[str, str], document: Any) -> Response:
        client_id = self._client(request, form)
        if client_id is None:
            return JSONResponse({"error": "invalid_client"}, 401)
        if form.get("grant_type") == "authorization_code":
            grant = self.codes.pop(form.get("code", ""), None)
            if (
                grant is None
                or grant["client_id"] != client_id
                or grant["redirect_uri"] != form.get("redirect_uri")
                or grant["code_challenge"] != s256(form.get("code_verifier", ""))
                or grant.get("resource") != form.get("resource")
            ):
                return JSONResponse({"error": "invalid_grant"}, 400)
            return self._issue(client_id, grant.get("scope"), new_refresh=True)
        if form.get("grant_type") == "refresh_token":
            held = self.refresh_tokens.get(form.get("refresh_token", ""))
            if held is None or held["client_id"] != client_id:
                return JSONResponse({"error": "invalid_grant"}, 400)
            if self.script["refresh_rotates"]:
                del self.refresh_tokens[form["refresh_token"]]
            return self._issue(client_id, held.get("scope"), new_refresh=self.script["refresh_rotates"])
        return JSONResponse({"error": "unsupported_grant_type"}, 400)

    def _issue(self, client_id: str, scope: str | None, *, new_refresh: bool) -> Response:
        access = "sas-at-" + secrets.token_urlsafe(16)
        self.access_tokens.add(access)
        answer: dict[str, Any] = {"access_token": access, "token_type": "Bearer"}
        if self.script["expires_in"] is not None:
            answer["expires_in"] = self.script["expires_in"]
        if scope:
            answer["scope"] = scope
        if new_refresh:
            answer["refresh_token"] = refresh = "sas-rt-" + secrets.token_urlsafe(16)
            self.refresh_tokens[refresh] = {"client_id": client_id, "scope": scope or ""}
        return JSONResponse(answer, headers={"cache-control": "no-store"})

    def register(self, request: Request, form: dict[str, str], document: Any) -> Response:
        if not isinstance(document, dict) or not document.get("redirect_uris"):
            return JSONResponse({"error": "invalid_redirect_uri"}, 400)
        client_id = f"sas-client-{len(self.script['clients']) + 1}"
        method = document.get("token_endpoint_auth_method", "client_secret_basic")
        secret = "sas-secret-" + secrets.token_urlsafe(16) if method == "client_secret_basic" else None
        self.script["clients"][client_id] = secret
        answer = {**document, "client_id": client_id, "client_id_issued_at": int(time.time())}
        if secret is not None:
            answer["client_secret"] = secret
        return JSONResponse(answer, 201)

    def revoke(self, request: Request, form: dict[str, str], document: Any) -> Response:
        if self._client(request, form) is None:
            return JSONResponse({"error": "invalid_client"}, 401)
        self.access_tokens.discard(form.get("token", ""))
        self.refresh_tokens.pop(form.get("token", ""), None)
        return Response(status_code=200)


def _merged(document: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {**document, **overrides}
    return {key: value for key, value in merged.items() if value is not None}


def _reply(reply: dict[str, Any]) -> Response:
    headers = reply.get("headers") or {}
    if "json" in reply:
        return JSONResponse(reply["json"], reply["status"], headers=headers)
    return Response(reply.get("body", ""), reply["status"], headers=headers, media_type="application/json")


@functools.cache
def _trusting(ca_file: Path | None) -> ssl.SSLContext:
    """The control client's TLS context (made once: creating one costs tens of milliseconds)."""
    return ssl.create_default_context(cafile=ca_file)


class ScriptedAuthorizationServer:
    """The scripted server in a thread: ``with ScriptedAuthorizationServer(script, pki=None) as server``.

    ``base`` is its origin and issuer (``https`` with ``pki``'s localhost leaf, plain ``http`` without),
    ``resource`` the upstream MCP endpoint.
    """

    def __init__(self, script: dict[str, Any] | None = None, *, pki: Pki | None = None) -> None:
        leaf = pki.localhost if pki else None
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        port = self._socket.getsockname()[1]
        self.base = f"{'https' if leaf else 'http'}://127.0.0.1:{port}"
        self.resource = f"{self.base}/mcp"
        self._state = _AuthorizationServer(self.base, script or {})
        tls = {"ssl_certfile": str(leaf.certfile), "ssl_keyfile": str(leaf.keyfile)} if leaf else {}
        config = uvicorn.Config(
            self._state.app(), lifespan="off", ws="none", http="h11", log_level="warning", access_log=False, **tls
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="scripted-as", daemon=True
        )
        self._verify = _trusting(pki.ca_file if pki else None)

    def __enter__(self) -> ScriptedAuthorizationServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the scripted authorization server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()

    def url(self, path: str) -> str:
        """``path`` on this server."""
        return self.base + path

    async def script(self, **changes: Any) -> None:
        """Replace the named script keys (``DEFAULT_SCRIPT``) through the control endpoint."""
        async with httpx2.AsyncClient(trust_env=False, verify=self._verify) as http:
            (await http.put(self.url("/control/script"), json=changes)).raise_for_status()

    async def reset(self, script: dict[str, Any] | None = None) -> None:
        """Start again from ``script`` (over ``DEFAULT_SCRIPT``), forgetting every request, code, token and
        registration: one server can serve many cases."""
        async with httpx2.AsyncClient(trust_env=False, verify=self._verify) as http:
            (await http.put(self.url("/control/reset"), json=script or {})).raise_for_status()

    async def requests(self, path: str | None = None) -> list[Recorded]:
        """The requests received (for ``path`` only, when given), oldest first."""
        async with httpx2.AsyncClient(trust_env=False, verify=self._verify) as http:
            answer = await http.get(self.url("/control/requests"))
        answer.raise_for_status()
        return [Recorded(**row) for row in answer.json() if path is None or row["path"] == path]

    async def authorize(self, authorization_url: str) -> dict[str, str]:
        """What a browser does with ``authorization_url``: the parameters of the redirect back (``code``,
        ``state``, maybe ``iss``). Raises ``AssertionError`` when the server does not redirect."""
        async with httpx2.AsyncClient(trust_env=False, verify=self._verify, follow_redirects=False) as http:
            answer = await http.get(authorization_url)
        if answer.status_code != 302:
            raise AssertionError(f"/authorize answered {answer.status_code}: {answer.text}")
        return dict(parse_qsl(urlsplit(answer.headers["location"]).query))

"""A small OAuth 2.0 Token Exchange server (RFC 8693 STS) on 127.0.0.1, run as a child process by tests.

    python -m tests.support.token_exchange_sts --port P --jwks-url URL --audience A \\
        --subject-issuer BASTION_ISS --issuer STS_ISS --client-id ID --client-secret S --record FILE \\
        [--expires-in 300] [--allowed-audience X ...]

Plain http, Starlette under uvicorn. Endpoints:

    GET  /healthz           200 "ok"
    GET  /jwks.json         the STS's public JWK Set (the key its issued tokens are signed with)
    POST /token             the token exchange (RFC 8693 section 2)
    POST /token/{fault}     the same request answered wrongly, for the client's error handling

``/token`` authenticates the client with HTTP Basic (``client_secret_basic``, RFC 6749 section
2.3.1; 401 ``invalid_client`` otherwise), requires ``grant_type`` token-exchange and a
``subject_token`` of type ``...:jwt``, verifies its ES256 signature (joserfc) against the JWK Set
fetched from ``--jwks-url`` on every request (Bastion serves its own at
``/.well-known/jwks.json``), and checks ``iss`` (``--subject-issuer``), ``aud`` (``--audience``),
``exp`` and ``sub``. An unacceptable subject token gets ``invalid_request``, as RFC 8693 section
2.2.2 requires; a target outside ``--allowed-audience`` (when given) gets ``invalid_target``.
It then issues an ES256 JWT (``typ: at+jwt``) with ``iss`` (``--issuer``), ``sub`` (the subject's),
``aud`` (the requested ``audience`` and/or ``resource``), ``iat``, ``exp``, ``jti``, ``client_id``,
``scope`` when asked, and ``act: {"sub": <client_id>}`` (section 4.1); ``expires_in`` is
``--expires-in``. Errors are JSON in the RFC 6749 section 5.2 form, ``Cache-Control: no-store``.

Faults (after client authentication): ``500`` (text body), ``not-json`` (200 HTML),
``no-access-token``, ``token-type-dpop``, ``n-a-access-token`` (``N_A`` for an access token),
``n-a-jwt`` (``N_A`` for an issued ``...:jwt``, which is valid), ``no-expires-in``, ``no-scope``
(the granted scope left out, meaning "as requested"), ``echo-subject-token`` (400 whose
``error_description`` repeats the subject token), ``echo-issued-token`` (400 whose
``error_description`` carries the token it would have issued), ``redirect`` (302), ``slow`` (a
normal answer after 2 s).

Each request to ``/token*`` appends one JSON line to ``--record``: ``path``, ``status``,
``error``, ``client_id``, ``auth`` (``basic`` or ``none``), the form's ``audience``,
``resource``, ``scope``, ``requested_token_type``, ``subject_token_type``, the verified subject's
``sub``, and the issued token's ``jti``. No token or secret is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx2
import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ISSUABLE = (ACCESS_TOKEN_TYPE, JWT_TYPE)
FAULTS = frozenset(
    {
        "500",
        "not-json",
        "no-access-token",
        "token-type-dpop",
        "n-a-access-token",
        "n-a-jwt",
        "no-expires-in",
        "no-scope",
        "echo-subject-token",
        "echo-issued-token",
        "redirect",
        "slow",
    }
)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class Refused(Exception):
    """An RFC 6749 section 5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> JSONResponse:
        headers = dict(NO_STORE)
        if self.error == "invalid_client":
            headers["WWW-Authenticate"] = 'Basic realm="sts"'
        return JSONResponse(
            {"error": self.error, "error_description": self.description}, status_code=self.status, headers=headers
        )


class STS:
    """The server's state: arguments, signing key, record file."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.key = ECKey.generate_key("P-256", parameters={"kid": "sts-1", "alg": "ES256", "use": "sig"}, private=True)
        self.record_path = Path(args.record)

    def record(self, entry: dict[str, Any]) -> None:
        with self.record_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()

    def authenticate(self, request: Request) -> str:
        """The client id from ``Authorization: Basic`` (RFC 6749 section 2.3.1), or ``Refused``."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise Refused("invalid_client", "client authentication (HTTP Basic) is required", 401)
        try:
            client_id, sep, secret = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Refused("invalid_client", "the Basic credentials are malformed", 401) from None
        client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        good_id = hmac.compare_digest(client_id.encode(), self.args.client_id.encode())
        good_secret = hmac.compare_digest(secret.encode(), self.args.client_secret.encode())
        if not (sep and good_id and good_secret):
            raise Refused("invalid_client", "unknown client or wrong secret", 401)
        return client_id

    async def subject_claims(self, form: FormData) -> dict[str, Any]:
        """The verified claims of the subject token (signature, iss, aud, exp, sub)."""
        subject_token = form.get("subject_token")
        if not isinstance(subject_token, str) or not subject_token:
            raise Refused("invalid_request", "subject_token is required")
        if form.get("subject_token_type") != JWT_TYPE:
            raise Refused("invalid_request", "subject_token_type must be urn:ietf:params:oauth:token-type:jwt")
        async with httpx2.AsyncClient(timeout=5.0, trust_env=False) as client:
            response = await client.get(self.args.jwks_url)
        if response.status_code != 200:
            raise Refused("server_error", f"the subject issuer's JWKS answered {response.status_code}", 500)
        try:
            keys = KeySet.import_key_set(response.json())
            token = jwt.decode(subject_token, keys, algorithms=["ES256"])
            registry = jwt.JWTClaimsRegistry(
                now=int(time.time()),
                iss={"essential": True, "value": self.args.subject_issuer},
                aud={"essential": True, "value": self.args.audience},
                exp={"essential": True},
                sub={"essential": True},
            )
            registry.validate(token.claims)
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            reason = getattr(exc, "error", None) or type(exc).__name__
            raise Refused("invalid_request", f"the subject token is not acceptable ({reason})") from None
        return dict(token.claims)

    def issue(self, form: FormData, client_id: str, subject: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The token response (RFC 8693 section 2.2.1) for a verified request, and the token's ``jti``."""
        if form.get("grant_type") != GRANT_TYPE:
            raise Refused("unsupported_grant_type", "only token exchange is supported here")
        requested = form.get("requested_token_type") or ACCESS_TOKEN_TYPE
        if requested not in ISSUABLE:
            raise Refused("invalid_request", "requested_token_type is not one this server issues")
        targets = [str(v) for v in (*form.getlist("audience"), *form.getlist("resource"))]
        if not targets:
            raise Refused("invalid_request", "audience or resource is required")
        allowed = self.args.allowed_audience
        if allowed and any(target not in allowed for target in targets):
            raise Refused("invalid_target", "the requested audience or resource is not served by this server")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.args.issuer,
            "sub": subject["sub"],
            "aud": targets[0] if len(targets) == 1 else targets,
            "iat": now,
            "exp": now + self.args.expires_in,
            "jti": secrets.token_hex(16),
            "client_id": client_id,
            "act": {"sub": client_id},
        }
        scope = form.get("scope")
        if isinstance(scope, str) and scope:
            claims["scope"] = scope
        header = {"alg": "ES256", "typ": "at+jwt", "kid": self.key.kid}
        body: dict[str, Any] = {
            "access_token": jwt.encode(header, claims, self.key, algorithms=["ES256"]),
            "issued_token_type": requested,
            "token_type": "Bearer",
            "expires_in": self.args.expires_in,
        }
        if "scope" in claims:
            body["scope"] = claims["scope"]
        return body, claims["jti"]

    async def token(self, request: Request) -> Response:
        fault = request.path_params.get("fault")
        if fault is not None and fault not in FAULTS:
            return PlainTextResponse("unknown fault", status_code=404)
        form = await request.form()
        entry: dict[str, Any] = {
            "path": request.url.path,
            "auth": "basic" if request.headers.get("authorization", "").lower().startswith("basic ") else "none",
            **{
                name: form.get(name)
                for name in ("audience", "resource", "scope", "requested_token_type", "subject_token_type")
            },
        }
        try:
            entry["client_id"] = self.authenticate(request)
            response = await self._answer(form, fault, entry)
        except Refused as refused:
            entry["error"] = refused.error
            response = refused.response()
        entry["status"] = response.status_code
        self.record(entry)
        return response

    async def _answer(self, form: FormData, fault: str | None, entry: dict[str, Any]) -> Response:
        if fault == "500":
            return PlainTextResponse("internal error", status_code=500)
        if fault == "not-json":
            return Response("<html><body>Service unavailable</body></html>", media_type="text/html")
        if fault == "redirect":
            return RedirectResponse("http://127.0.0.1:9/token", status_code=302)
        if fault == "echo-subject-token":
            raise Refused("invalid_request", f"cannot use subject token {form.get('subject_token')}")
        if fault == "slow":
            await asyncio.sleep(2.0)
        subject = await self.subject_claims(form)
        entry["sub"] = subject["sub"]
        body, entry["jti"] = self.issue(form, entry["client_id"], subject)
        if fault == "no-access-token":
            del body["access_token"]
        elif fault == "token-type-dpop":
            body["token_type"] = "DPoP"
        elif fault == "n-a-access-token":
            body.update(token_type="N_A", issued_token_type=ACCESS_TOKEN_TYPE)
        elif fault == "n-a-jwt":
            body.update(token_type="N_A", issued_token_type=JWT_TYPE)
        elif fault == "no-expires-in":
            del body["expires_in"]
        elif fault == "no-scope":
            body.pop("scope", None)
        elif fault == "echo-issued-token":
            raise Refused("invalid_request", f"refusing to hand out {body['access_token']}")
        return JSONResponse(body, headers=NO_STORE)

    def app(self) -> Starlette:
        async def healthz(_: Request) -> Response:
            return PlainTextResponse("ok")

        async def jwks(_: Request) -> Response:
            return JSONResponse({"keys": [self.key.as_dict(private=False)]})

        return Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/jwks.json", jwks),
                Route("/token", self.token, methods=["POST"]),
                Route("/token/{fault}", self.token, methods=["POST"]),
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks-url", required=True, help="where the subject tokens' issuer publishes its JWKS")
    parser.add_argument("--audience", required=True, help="the aud a subject token must carry (this STS)")
    parser.add_argument("--subject-issuer", required=True, help="the iss a subject token must carry")
    parser.add_argument("--issuer", required=True, help="the iss of the tokens this STS issues")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--record", required=True, help="JSON lines file, one line per exchange")
    parser.add_argument("--expires-in", type=int, default=300)
    parser.add_argument("--allowed-audience", action="append", default=[])
    args = parser.parse_args()
    uvicorn.run(STS(args).app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

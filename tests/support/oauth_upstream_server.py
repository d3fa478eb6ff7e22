"""An upstream MCP server that needs its own OAuth, for end-to-end tests of Bastion's credential plane.

The server (run as a child process, plain HTTP on 127.0.0.1) is an OAuth resource server of the
test provider (``tests/support/oidc_provider``), written with the official ``mcp`` SDK (v2)::

    python -m tests.support.oauth_upstream_server --port N --issuer URL --ca-file CA \\
        --introspection-client-id ID --introspection-client-secret SECRET --record FILE \\
        [--required-scope SCOPE ...]

- Its resource URI (RFC 8707 audience, RFC 9728 ``resource``) is ``http://127.0.0.1:N/mcp``, also
  the MCP endpoint (Streamable HTTP).
- Tokens are checked by RFC 7662 introspection at the provider on every request (HTTPS, trusting
  ``CA``; the server authenticates as its own confidential client with HTTP Basic), not cached,
  so a revoked token stops working at once. JWT verification was not used because oidc-provider
  refuses JWT access tokens at its revocation endpoint, so they could not be revoked. Accepted
  only: ``active`` true, ``token_type`` Bearer (a refresh token introspects as active without
  one), ``iss`` the issuer, ``aud`` this resource, ``exp`` in the future; then the SDK checks the
  resource again and each ``--required-scope`` (403 ``insufficient_scope``).
- The SDK serves the protected resource metadata at
  ``/.well-known/oauth-protected-resource/mcp`` (``authorization_servers``: the issuer) and
  answers 401 with ``WWW-Authenticate: Bearer ..., resource_metadata="..."``.
- Every HTTP request is appended to ``FILE`` as one JSON line (``method``, ``path``, ``query``,
  ``headers`` as ``[name, value]`` pairs) BEFORE authentication, by a raw ASGI middleware.
- Tools: ``whoami`` (``sub``, ``client_id``, ``scope``, ``resource`` of the token as the verifier
  saw it) and ``echo(text)``.

``OAuthUpstreamServer`` starts it as a context manager, like ``OIDCProvider``.
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx2
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.bastion_process import REPO, free_port, stop, wait_http

# --- the server ---------------------------------------------------------------------------


class IntrospectionVerifier:
    """An SDK ``TokenVerifier`` asking the authorization server about each token (RFC 7662)."""

    def __init__(self, *, issuer: str, resource: str, ca_file: Path, client_id: str, client_secret: str) -> None:
        self.issuer = issuer
        self.resource = resource
        self._tls = ssl.create_default_context(cafile=ca_file)
        self._auth = httpx2.BasicAuth(client_id, client_secret)
        self._endpoint: str | None = None

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            async with httpx2.AsyncClient(verify=self._tls, timeout=10.0) as http:
                if self._endpoint is None:
                    metadata = await http.get(f"{self.issuer}/.well-known/oauth-authorization-server")
                    metadata.raise_for_status()
                    self._endpoint = str(metadata.json()["introspection_endpoint"])
                response = await http.post(
                    self._endpoint, data={"token": token, "token_type_hint": "access_token"}, auth=self._auth
                )
                response.raise_for_status()
                claims: dict[str, Any] = response.json()
        except (httpx2.HTTPError, ValueError, KeyError) as exc:  # fail closed: no answer, no access
            print(f"oauth-upstream: introspection failed: {exc!r}", file=sys.stderr, flush=True)
            return None
        return self.accepted(token, claims)

    def accepted(self, token: str, claims: dict[str, Any]) -> AccessToken | None:
        """The SDK's view of an introspection answer, or ``None`` if it does not grant access here."""
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        exp = claims.get("exp")
        if (
            claims.get("active") is not True
            or claims.get("token_type") != "Bearer"
            or claims.get("iss") != self.issuer
            or self.resource not in audiences
            or not isinstance(exp, int)
            or exp <= time.time()
        ):
            return None
        scope = str(claims.get("scope") or "")
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id")),
            scopes=scope.split(),
            expires_at=exp,
            resource=self.resource,
            subject=claims.get("sub"),
            claims={"iss": self.issuer, "sub": claims.get("sub"), "client_id": claims.get("client_id"), "scope": scope},
        )


class RecordRequests:
    """Raw ASGI middleware: one JSON line per HTTP request, written before the app (and its auth) runs."""

    def __init__(self, app: ASGIApp, record: Path) -> None:
        self.app = app
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self._write(scope)
        await self.app(scope, receive, send)

    def _write(self, scope: Scope) -> None:
        entry = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]],
        }
        with self.record.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")


def build_app(args: argparse.Namespace) -> ASGIApp:
    resource = resource_for(args.port)
    verifier = IntrospectionVerifier(
        issuer=args.issuer,
        resource=resource,
        ca_file=Path(args.ca_file),
        client_id=args.introspection_client_id,
        client_secret=args.introspection_client_secret,
    )
    auth = AuthSettings(
        issuer_url=args.issuer,
        resource_server_url=resource,
        required_scopes=args.required_scope or None,
        validate_token_resource=True,
    )
    server = MCPServer("oauth-upstream", token_verifier=verifier, auth=auth)

    @server.tool()
    async def whoami() -> dict[str, Any]:
        """The access token's subject, client and scope, as this server's verifier saw them."""
        token = get_access_token()
        if token is None:  # the SDK's RequireAuthMiddleware lets no such request through
            raise RuntimeError("no access token")
        claims = token.claims or {}
        return {
            "sub": token.subject,
            "client_id": token.client_id,
            "scope": claims.get("scope"),
            "resource": token.resource,
        }

    @server.tool()
    def echo(text: str) -> str:
        """TEXT, unchanged."""
        return text

    return RecordRequests(server.streamable_http_app(host="127.0.0.1"), Path(args.record))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--introspection-client-id", required=True)
    parser.add_argument("--introspection-client-secret", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--required-scope", action="append", default=[])
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        build_app(args), host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=2
    )
    uvicorn.Server(config).run()


# --- the test helper ----------------------------------------------------------------------


def resource_for(port: int) -> str:
    """The resource URI (and MCP endpoint) of the server on ``port``."""
    return f"http://127.0.0.1:{port}/mcp"


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server received it, before authentication."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        return [value for key, value in self.headers if key.lower() == name.lower()]


class RecordingServerProcess:
    """A test MCP server run as a child process that records every request it receives.

    Subclasses set ``port``, ``timeout_s``, ``record_path`` (JSON lines) and ``log_path`` and
    implement ``start`` with ``_launch``. A context manager: started on enter, stopped on exit.
    """

    port: int
    timeout_s: float
    record_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    ready_path: str = "/.well-known/oauth-protected-resource/mcp"
    """What ``_launch`` polls until it answers (by default the RFC 9728 metadata)."""

    def start(self) -> Self:
        """Run the server and wait until it answers."""
        raise NotImplementedError

    def _launch(self, args: Sequence[str]) -> Self:
        """Run ``python -m <args>`` from the repository and wait until ``ready_path`` (its RFC 9728
        metadata) answers; raise ``RuntimeError`` (with the log) if it does not within ``timeout_s``."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO
            )
        try:
            wait_http(
                f"http://127.0.0.1:{self.port}{self.ready_path}",
                timeout_s=self.timeout_s,
                proc=self.proc,
            )
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- {args[0]} log ---\n{self.log()}") from exc
        return self

    def stop(self) -> None:
        """SIGTERM the process (SIGKILL if it lingers); a no-op if it is not running."""
        if self.proc is not None:
            stop(self.proc)

    def log(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request received so far, oldest first (the readiness probes included)."""
        if not self.record_path.exists():
            return []
        entries = [json.loads(line) for line in self.record_path.read_text(encoding="utf-8").splitlines() if line]
        return [
            RecordedRequest(e["method"], e["path"], e["query"], tuple((k, v) for k, v in e["headers"])) for e in entries
        ]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OAuthUpstreamServer(RecordingServerProcess):
    """The server above as a child process (a context manager: started on enter, stopped on exit).

    ``port`` defaults to a free one; pass one (and use ``resource_for(port)``) when the provider's
    configuration needs the resource URI before this object exists. ``workdir`` receives
    ``<name>.requests.jsonl`` (the record) and ``<name>.log`` (stdout and stderr). ``start()``
    raises ``RuntimeError`` (with the log) if the server does not come up within ``timeout_s``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        issuer: str,
        ca_file: Path,
        introspection_client_id: str,
        introspection_client_secret: str,
        required_scopes: Sequence[str] = (),
        port: int | None = None,
        name: str = "oauth-upstream",
        timeout_s: float = 30.0,
    ) -> None:
        self.workdir = workdir
        self.issuer = issuer
        self.ca_file = ca_file
        self.introspection_client_id = introspection_client_id
        self.introspection_client_secret = introspection_client_secret
        self.required_scopes = tuple(required_scopes)
        self.port = port if port is not None else free_port()
        self.timeout_s = timeout_s
        self.record_path = workdir / f"{name}.requests.jsonl"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The MCP endpoint (Streamable HTTP)."""
        return resource_for(self.port)

    @property
    def resource(self) -> str:
        """The resource URI its tokens must be issued for (the same as ``url``)."""
        return resource_for(self.port)

    @property
    def resource_metadata_url(self) -> str:
        """Where it serves its RFC 9728 protected resource metadata."""
        return f"http://127.0.0.1:{self.port}/.well-known/oauth-protected-resource/mcp"

    def start(self) -> Self:
        """Run the server and wait until its protected resource metadata answers."""
        args = [
            "tests.support.oauth_upstream_server",
            "--port",
            str(self.port),
            "--issuer",
            self.issuer,
            "--ca-file",
            str(self.ca_file),
            "--introspection-client-id",
            self.introspection_client_id,
            "--introspection-client-secret",
            self.introspection_client_secret,
            "--record",
            str(self.record_path),
        ]
        for scope in self.required_scopes:
            args += ["--required-scope", scope]
        return self._launch(args)


if __name__ == "__main__":
    main()

"""An upstream MCP server that accepts only JWTs from one issuer, and records what reaches it.

Run as a child process by tests (plain HTTP on 127.0.0.1), written with the official ``mcp`` SDK::

    python -m tests.support.recording_upstream --port N --jwks-url URL --issuer ISS --audience AUD \\
        --record FILE

- Its MCP endpoint (Streamable HTTP) is ``http://127.0.0.1:N/mcp``.
- Bearer tokens are ES256 JWTs verified with joserfc against the JWK Set at ``--jwks-url`` (e.g.
  the token exchange STS's ``/jwks.json``, ``tests/support/token_exchange_sts``), fetched on every
  request; ``iss`` must be ``--issuer``, ``aud`` must be or contain ``--audience``, ``exp`` and
  ``sub`` are required. Anything else is a 401 from the SDK (``WWW-Authenticate: Bearer``).
- Every HTTP request is appended to ``FILE`` as one JSON line (``method``, ``path``, ``query``,
  ``headers`` as ``[name, value]`` pairs) BEFORE authentication (``RecordRequests`` of
  ``tests/support/oauth_upstream_server``).
- Tool ``whoami``: the verified claims of the bearer token, whole (``iss``, ``sub``, ``aud``,
  ``act`` ...).

``RecordingUpstream`` starts it as a context manager.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import httpx2
import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from tests.support.bastion_process import free_port
from tests.support.oauth_upstream_server import RecordingServerProcess, RecordRequests

__all__ = ["JwtVerifier", "RecordingUpstream"]


class JwtVerifier:
    """An SDK ``TokenVerifier`` for ES256 JWTs of one issuer, for one audience."""

    def __init__(self, *, jwks_url: str, issuer: str, audience: str) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            async with httpx2.AsyncClient(timeout=5.0, trust_env=False) as http:
                response = await http.get(self.jwks_url)
                response.raise_for_status()
                keys = KeySet.import_key_set(response.json())
            claims = dict(jwt.decode(token, keys, algorithms=["ES256"]).claims)
            jwt.JWTClaimsRegistry(
                now=int(time.time()),
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(claims)
        except (httpx2.HTTPError, JoseError, ValueError, KeyError, TypeError) as exc:  # fail closed
            print(f"recording-upstream: token refused: {exc!r}", file=sys.stderr, flush=True)
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or ""),
            scopes=str(claims.get("scope") or "").split(),
            expires_at=int(claims["exp"]),
            subject=str(claims["sub"]),
            claims=claims,
        )


def build_app(args: argparse.Namespace) -> ASGIApp:
    url = f"http://127.0.0.1:{args.port}/mcp"
    verifier = JwtVerifier(jwks_url=args.jwks_url, issuer=args.issuer, audience=args.audience)
    auth = AuthSettings(issuer_url=args.issuer, resource_server_url=url, validate_token_resource=False)
    server = MCPServer("recording-upstream", token_verifier=verifier, auth=auth)

    @server.tool()
    async def whoami() -> dict[str, Any]:
        """The verified claims of the bearer token this request carried."""
        token = get_access_token()
        if token is None:  # the SDK's RequireAuthMiddleware lets no such request through
            raise RuntimeError("no access token")
        return dict(token.claims or {})

    return RecordRequests(server.streamable_http_app(host="127.0.0.1"), Path(args.record))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks-url", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        build_app(args), host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=2
    )
    uvicorn.Server(config).run()


class RecordingUpstream(RecordingServerProcess):
    """The server above as a child process (a context manager: started on enter, stopped on exit).

    ``workdir`` receives ``recording-upstream.requests.jsonl`` and ``recording-upstream.log``.
    ``start()`` raises ``RuntimeError`` (with the log) if it does not come up within ``timeout_s``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        jwks_url: str,
        issuer: str,
        audience: str,
        port: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.workdir = workdir
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.port = port if port is not None else free_port()
        self.timeout_s = timeout_s
        self.record_path = workdir / "recording-upstream.requests.jsonl"
        self.log_path = workdir / "recording-upstream.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The MCP endpoint (Streamable HTTP)."""
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> Self:
        """Run the server and wait until it answers."""
        return self._launch([
            "tests.support.recording_upstream", "--port", str(self.port), "--jwks-url", self.jwks_url,
            "--issuer", self.issuer, "--audience", self.audience, "--record", str(self.record_path),
        ])  # fmt: skip


if __name__ == "__main__":
    main()

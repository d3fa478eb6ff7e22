"""The FastMCP proxy ``make bench-peers`` measures, run by the Python of ``.bench/peers/fastmcp``.

Two configurations of FastMCP's own ``create_proxy`` in front of one Streamable HTTP upstream:

- ``default``: ``create_proxy(URL)`` with its defaults: a fresh upstream session per request, no
  authentication;
- ``shared-jwt``: one upstream session, connected before the proxy starts and shared by every
  request (``create_proxy`` reuses a connected ``Client``), and FastMCP's ``JWTVerifier`` checking
  an RS256 bearer token. The key pair is generated at start with FastMCP's ``RSAKeyPair`` test
  helper, which also mints the token; the token is written to ``--token-file`` for the benchmark.

The proxy serves Streamable HTTP at ``/mcp`` with FastMCP's default transport settings (SSE
answers, stateful sessions), and ``GET /healthz`` (a custom route) for the benchmark's readiness
probe; uvicorn logs at warning, as Bastion does in ``make bench``.

Run: ``.bench/peers/fastmcp/bin/python benchmarks/peers/fastmcp_proxy.py --upstream URL --port N
--mode shared-jwt --token-file PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from fastmcp import Client, FastMCP  # type: ignore[import-not-found, unused-ignore]
from fastmcp.server import create_proxy  # type: ignore[import-not-found, unused-ignore]
from fastmcp.server.auth.providers.jwt import (  # type: ignore[import-not-found, unused-ignore]
    JWTVerifier,
    RSAKeyPair,
)
from starlette.requests import Request  # type: ignore[import-not-found, unused-ignore]
from starlette.responses import JSONResponse  # type: ignore[import-not-found, unused-ignore]

ISSUER = "https://bench-peers.invalid"
AUDIENCE = "bench-peers-fastmcp"
MODES = ("default", "shared-jwt")


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def run(proxy: FastMCP, port: int) -> None:
    proxy.custom_route("/healthz", methods=["GET"])(healthz)
    await proxy.run_http_async(host="127.0.0.1", port=port, log_level="warning", show_banner=False)


async def serve(upstream: str, port: int, mode: str, token_file: Path | None) -> None:
    """Serve the proxy of ``mode`` on 127.0.0.1:``port`` until stopped."""
    if mode == "default":
        await run(create_proxy(upstream), port)
        return
    if token_file is None:
        raise SystemExit("--token-file is required with --mode shared-jwt")
    keys = RSAKeyPair.generate()
    verifier = JWTVerifier(public_key=keys.public_key, issuer=ISSUER, audience=AUDIENCE)
    token = keys.create_token(subject="bench-user", issuer=ISSUER, audience=AUDIENCE)
    await asyncio.to_thread(token_file.write_text, token, "utf-8")
    async with Client(upstream) as shared:  # connected: create_proxy reuses this one session
        await run(create_proxy(shared, auth=verifier), port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="Streamable HTTP URL of the upstream MCP server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="default")
    parser.add_argument("--token-file", type=Path, help="where shared-jwt writes the bearer token it minted")
    args = parser.parse_args()
    asyncio.run(serve(args.upstream, args.port, args.mode, args.token_file))


if __name__ == "__main__":
    main()

"""The floor of ``make bench``: what Bastion's libraries cost per ``tools/call`` with none of its checks.

An ASGI application served as ``bastion serve`` serves Bastion (uvicorn on uvloop, Bastion's own
HTTP/1.1 protocol ``bastion.transport.connections.BastionHttpProtocol``, the same collector
thresholds and ``gc.freeze`` after start) that does, per POST, only what any gateway with Bastion's
guarantees must do around a call, with Bastion's own code for each:

- read the body and parse it as JSON (``json.loads``);
- for a ``tools/call``: build the decision record (``bastion.audit.build.decision_body``, for a fixed
  principal) and wait until the audit log committed it (``SQLiteAuditLog.append``, ``synchronous:
  full``, the default) before forwarding;
- forward the body to the upstream with ``HttpUpstream.send`` (pooled connections opened to the
  addresses the egress guard checked), parse the reply and serialise it again (Bastion inspects
  every message it relays);
- for a ``tools/call``: queue the outcome record (``outcome_body``, ``append_nowait``);
- answer with the reply and the upstream's ``Mcp-Session-Id``.

No authentication, session table, policy decision, argument checks, limits, inspection or
redaction: the difference between Bastion and this floor is what those cost. Anything but a POST
is answered 405. An upstream that fails is answered 502 (the benchmark counts it as an error).

Run: ``python benchmarks/floor_app.py --port 9200 --upstream http://127.0.0.1:9100/mcp --data DIR``
(endpoint ``/mcp``; ``GET /healthz`` answers 200 for the readiness probe).
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path
from typing import Any

import uvicorn

from bastion.audit.build import decision_body, outcome_body
from bastion.audit.store_sqlite import SQLiteAuditLog
from bastion.config.settings import ServerSettings
from bastion.egress import AllowList, EgressGuard
from bastion.errors import BastionError
from bastion.gateway import _GC_THRESHOLDS
from bastion.ids import new_id
from bastion.principal import Principal
from bastion.transport.connections import ConnectionLimits, http_protocol
from bastion.upstream.http import HttpUpstream

PRINCIPAL = Principal(kind="User", sub="bench", issuer="http://127.0.0.1", auth_method="bastion_jwt",
                      expires_at=2_000_000_000, groups=("bench",))  # fmt: skip
JSON = [(b"content-type", b"application/json")]


class Floor:
    """The ASGI application of the module docstring, forwarding to ``upstream`` with its audit log in
    ``data``."""

    def __init__(self, upstream: str, data: Path) -> None:
        self._upstream_url = upstream
        self._data = data
        self._audit: SQLiteAuditLog | None = None
        self._upstream: HttpUpstream | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._data.mkdir(parents=True, exist_ok=True)
                self._audit = SQLiteAuditLog(self._data / "audit.db")
                await self._audit.start()
                guard = EgressGuard(allow=AllowList.parse(["127.0.0.1"]))
                self._upstream = HttpUpstream(self._upstream_url, guard=guard, allow_http=True)
                gc.set_threshold(*_GC_THRESHOLDS)  # as Gateway.start
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._upstream is not None:
                    await self._upstream.aclose()
                if self._audit is not None:
                    await self._audit.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/healthz":
            await _answer(send, 200, b"{}")
            return
        if scope["method"] != "POST" or self._audit is None or self._upstream is None:
            await _answer(send, 405, b"{}")
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        request = json.loads(body)
        decision = None
        if request.get("method") == "tools/call":
            params = request["params"]
            decision = decision_body(
                route="echo", method="tools/call", effect="allow", policy_ids=["bench-echo"], obligations={},
                reason=None, policy_version=None, arguments=params.get("arguments"), principal=PRINCIPAL,
                target=params["name"], session=headers.get("mcp-session-id"), decision_id=new_id(),
                store_arguments=True,
            )  # fmt: skip
            await self._audit.append(decision)
        try:
            response = await self._upstream.send("POST", headers=headers, body=body,
                                                 session_id=headers.get("mcp-session-id"))  # fmt: skip
        except BastionError as exc:
            await _answer(send, 502, json.dumps({"error": exc.message}).encode())
            return
        reply = json.dumps(json.loads(response.body), separators=(",", ":")).encode() if response.body else b""
        if decision is not None:
            self._audit.append_nowait(outcome_body(
                decision, error=False, error_code=None, request_bytes=len(body), response_bytes=len(reply),
                credential_kind="none", status=response.status, duration_ms=0.0,
            ))  # fmt: skip
        extra = [(b"mcp-session-id", response.session_id.encode())] if response.session_id else []
        await _answer(send, response.status, reply, extra)


async def _answer(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    head = [*JSON, (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve the floor until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the echo upstream's MCP URL")
    parser.add_argument("--data", type=Path, required=True, help="directory of the audit log")
    args = parser.parse_args()
    server = ServerSettings()
    limits = ConnectionLimits(server.header_timeout_s, server.body_timeout_s, server.max_header_bytes)
    uvicorn.run(Floor(args.upstream, args.data), host="127.0.0.1", port=args.port, http=http_protocol(limits),
                ws="none", lifespan="on", log_level="warning", access_log=False, server_header=False,
                log_config=None)  # fmt: skip


if __name__ == "__main__":
    main()

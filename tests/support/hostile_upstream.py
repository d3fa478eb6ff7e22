"""A hostile Streamable HTTP MCP upstream, written by hand so that it can misbehave on purpose.

Run as a child process by the end-to-end tests (plain HTTP on 127.0.0.1)::

    python -m tests.support.hostile_upstream --port N --record FILE

Its MCP endpoint is ``http://127.0.0.1:N/mcp`` (MCP 2025-11-25 basic/transports). It speaks
the protocol well enough for Bastion and a raw client (``initialize`` with an ``Mcp-Session-Id``,
``tools/list``, ``tools/call``, GET streams, DELETE) and breaks it where a test asks:

- ``tools/list`` (``list_mode``; requests whose id starts with ``bastion-catalog`` (Bastion's own
  catalog loads) always get a plain JSON answer):

  - ``json``: the whole tool list as JSON;
  - ``prime_then_end``: an SSE stream with one priming event (an id, empty data) that then ends
    without the answer; a GET with ``Last-Event-ID: <that id>`` replays the whole list, unfiltered;
  - ``extra_on_sse``: an SSE stream carrying ``{"id": 999, "result": {"tools": [...]}}`` (an answer
    to a request nobody sent) before the real answer;
  - ``wrong_id_json``: a JSON answer with id 998 instead of the request's.

- ``tools/call``: ``explode`` answers with SSE headers and a progress notification, then aborts
  the connection mid-stream; ``announce`` answers on SSE with
  ``notifications/tools/list_changed`` before its result; any other tool answers ``ok <name>``.
- GET without ``Last-Event-ID``: a standing event stream that carries what ``/control/push`` sends.
- DELETE: ``delete_status`` (200 unless set).

Tools (``TOOLS``): all read-only, except those named in ``destructive``, which are listed with
``destructiveHint: true``. The test steers it through ``/control``:

    POST /control/reset   back to the defaults
    POST /control/set     JSON ``{"list_mode": ..., "delete_status": ..., "destructive": [...]}``
    POST /control/push    a JSON-RPC message to every open standing GET stream; answers ``{"streams": n}``
    GET  /control/streams ``{"streams": n}``, the open standing GET streams

Every HTTP request is appended to ``FILE`` as one JSON line (``RecordRequests``).
``HostileUpstream`` starts it as a context manager.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from tests.support.bastion_process import free_port
from tests.support.oauth_upstream_server import RecordingServerProcess, RecordRequests

__all__ = ["TOOLS", "HostileUpstream", "build_app"]

TOOLS = ("search", "export_all", "purge", "wipe", "explode", "announce")
"""Every tool the upstream lists, in order."""

PROTOCOL_VERSION = "2025-11-25"
UNSOLICITED_SSE_ID = 999
UNSOLICITED_JSON_ID = 998


@dataclass
class Behaviour:
    """What the upstream does now (``/control/set`` changes it)."""

    list_mode: str = "json"
    delete_status: int = 200
    destructive: set[str] = field(default_factory=set)


class Upstream:
    """The upstream's state: its behaviour, primed streams awaiting a resumption, standing GET streams."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.primed: dict[str, dict[str, Any]] = {}
        self.streams: set[asyncio.Queue[dict[str, Any]]] = set()
        self._counter = itertools.count(1)

    def tools(self) -> list[dict[str, Any]]:
        """The tool definitions as listed now."""
        listed = []
        for name in TOOLS:
            destructive = name in self.behaviour.destructive
            annotations = {"readOnlyHint": not destructive, "destructiveHint": destructive}
            schema = {"type": "object", "properties": {}}
            listed.append({"name": name, "description": f"the {name} tool", "inputSchema": schema,
                           "annotations": annotations})  # fmt: skip
        return listed

    def stream_id(self) -> str:
        """A fresh SSE stream id."""
        return f"s{next(self._counter)}"

    # --- MCP ---------------------------------------------------------------------------------

    async def mcp(self, request: Request) -> Response:
        """The MCP endpoint: POST, GET and DELETE."""
        if request.method == "GET":
            return self._get(request)
        if request.method == "DELETE":
            return Response(status_code=self.behaviour.delete_status)
        message = json.loads(await request.body())
        method, rpc_id = message.get("method"), message.get("id")
        if method is None or rpc_id is None:  # a notification or a response: accepted
            return Response(status_code=202)
        if method == "initialize":
            result = {"protocolVersion": PROTOCOL_VERSION, "capabilities": {"tools": {"listChanged": True}},
                      "serverInfo": {"name": "hostile", "version": "0"}}  # fmt: skip
            return JSONResponse(_answer(rpc_id, result), headers={"mcp-session-id": uuid.uuid4().hex})
        if method == "tools/list":
            return self._tools_list(rpc_id)
        if method == "tools/call":
            return self._tools_call(rpc_id, message.get("params") or {})
        return JSONResponse({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32601, "message": "no such method"}})

    def _tools_list(self, rpc_id: Any) -> Response:
        answer = _answer(rpc_id, {"tools": self.tools()})
        mode = self.behaviour.list_mode
        if mode == "json" or str(rpc_id).startswith("bastion-catalog"):
            return JSONResponse(answer)
        if mode == "wrong_id_json":
            return JSONResponse({**answer, "id": UNSOLICITED_JSON_ID})
        if mode == "extra_on_sse":
            return _sse([(None, {**answer, "id": UNSOLICITED_SSE_ID}), (None, answer)])
        stream = self.stream_id()  # prime_then_end
        self.primed[f"{stream}-0"] = answer
        return _sse([(f"{stream}-0", None)])

    def _tools_call(self, rpc_id: Any, params: dict[str, Any]) -> Response:
        name = params.get("name")
        result = {"content": [{"type": "text", "text": f"ok {name}"}], "isError": False}
        if name == "announce":
            changed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
            return _sse([(None, changed), (None, _answer(rpc_id, result))])
        if name == "explode":
            token = ((params.get("_meta") or {}).get("progressToken")) or "explode"
            progress = {"jsonrpc": "2.0", "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": 1, "total": 2}}  # fmt: skip
            return StreamingResponse(_explode(progress), media_type="text/event-stream")
        return JSONResponse(_answer(rpc_id, result))

    def _get(self, request: Request) -> Response:
        last = request.headers.get("last-event-id")
        if last is not None:
            answer = self.primed.pop(last, None)
            if answer is None:
                return Response(status_code=404)
            return _sse([(last.removesuffix("-0") + "-1", answer)])
        return StreamingResponse(self._standing(), media_type="text/event-stream")

    async def _standing(self) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.streams.add(queue)
        try:
            yield b": open\n\n"
            while True:
                yield _event(None, await queue.get())
        finally:
            self.streams.discard(queue)

    # --- control -----------------------------------------------------------------------------

    async def reset(self, request: Request) -> Response:
        self.behaviour = Behaviour()
        self.primed.clear()
        return JSONResponse({"ok": True})

    async def set(self, request: Request) -> Response:
        changes = await request.json()
        if "list_mode" in changes:
            self.behaviour.list_mode = str(changes["list_mode"])
        if "delete_status" in changes:
            self.behaviour.delete_status = int(changes["delete_status"])
        if "destructive" in changes:
            self.behaviour.destructive = set(changes["destructive"])
        return JSONResponse({"ok": True})

    async def push(self, request: Request) -> Response:
        message = await request.json()
        for queue in self.streams:
            queue.put_nowait(message)
        return JSONResponse({"streams": len(self.streams)})

    async def count(self, request: Request) -> Response:
        return JSONResponse({"streams": len(self.streams)})


def _answer(rpc_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "result": result}


def _event(event_id: str | None, message: dict[str, Any] | None) -> bytes:
    """One SSE event; ``message`` ``None`` makes a priming event (an id and empty data)."""
    head = f"id: {event_id}\n" if event_id else ""
    data = json.dumps(message) if message is not None else ""
    return f"{head}data: {data}\n\n".encode()


def _sse(events: Sequence[tuple[str | None, dict[str, Any] | None]]) -> Response:
    body = b"".join(_event(event_id, message) for event_id, message in events)
    return Response(body, media_type="text/event-stream")


async def _explode(progress: dict[str, Any]) -> AsyncIterator[bytes]:
    """SSE headers and one progress event, then the connection is aborted (no end of the chunked body)."""
    yield _event(None, progress)
    await asyncio.sleep(0.2)
    raise ConnectionAbortedError("the hostile upstream aborts the stream on purpose")


def build_app(record: Path) -> ASGIApp:
    """The ASGI app: ``/mcp`` and the ``/control`` endpoints around one ``Upstream``; every request
    is appended to ``record`` (``RecordRequests``)."""
    upstream = Upstream()
    app = Starlette(
        routes=[
            Route("/mcp", upstream.mcp, methods=["GET", "POST", "DELETE"]),
            Route("/control/reset", upstream.reset, methods=["POST"]),
            Route("/control/set", upstream.set, methods=["POST"]),
            Route("/control/push", upstream.push, methods=["POST"]),
            Route("/control/streams", upstream.count, methods=["GET"]),
        ]
    )
    return RecordRequests(app, record)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        build_app(Path(args.record)), host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=1
    )


# --- the test helper ----------------------------------------------------------------------


class HostileUpstream(RecordingServerProcess):
    """The server above as a child process (a context manager: started on enter, stopped on exit).

    ``workdir`` receives ``hostile-upstream.requests.jsonl`` (every HTTP request it received, see
    ``requests()``) and ``hostile-upstream.log`` (its stdout and stderr). ``start()`` raises
    ``RuntimeError`` (with the log) if it does not answer within ``timeout_s``.
    """

    ready_path = "/control/streams"

    def __init__(self, workdir: Path, *, timeout_s: float = 30.0) -> None:
        self.port = free_port()
        self.timeout_s = timeout_s
        self.record_path = workdir / "hostile-upstream.requests.jsonl"
        self.log_path = workdir / "hostile-upstream.log"
        self.proc = None

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        return f"http://127.0.0.1:{self.port}/mcp"

    def _control(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/control/{path}"

    def start(self) -> Self:
        """Run the server and wait until its control endpoint answers."""
        return self._launch(
            ["tests.support.hostile_upstream", "--port", str(self.port), "--record", str(self.record_path)]
        )

    def reset(self) -> None:
        """Back to the defaults (JSON lists, DELETE 200, nothing destructive)."""
        httpx2.post(self._control("reset"), timeout=5).raise_for_status()

    def set(self, **changes: Any) -> None:
        """Change its behaviour: ``list_mode``, ``delete_status``, ``destructive`` (tool names)."""
        if "destructive" in changes:
            changes["destructive"] = sorted(changes["destructive"])
        httpx2.post(self._control("set"), json=changes, timeout=5).raise_for_status()

    def push(self, message: dict[str, Any]) -> int:
        """Send ``message`` on every open standing GET stream; return how many there were."""
        response = httpx2.post(self._control("push"), json=message, timeout=5)
        response.raise_for_status()
        return int(response.json()["streams"])

    def streams(self) -> int:
        """How many standing GET streams are open."""
        return int(httpx2.get(self._control("streams"), timeout=5).json()["streams"])


if __name__ == "__main__":
    main()

"""What every small HTTP MCP test server of ``tests/support`` shares: running as a child process
on a free loopback port, a ``--port`` (and ``--json``) command line, and a debug list.

A server module defines how its app is built and calls ``serve_main`` from its ``main``; its
context manager starts it with ``server_process`` (the module run as ``python -m``), which yields
the base URL ``http://127.0.0.1:<port>`` once ``ready`` answers and stops the child afterwards.
``with_debug_list`` serves a list the server keeps (the calls it carried out) as JSON at a path,
so a test can compare what reached the upstream with what Bastion recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx2
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.bastion_process import free_port, stop, wait_http

__all__ = ["debug_list", "serve_main", "server_process", "with_debug_list"]


def with_debug_list(inner: ASGIApp, path: str, records: Sequence[Any]) -> ASGIApp:
    """``inner``, plus ``GET path`` answering ``records`` (as they are at that moment) as a JSON array."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == path:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": json.dumps(list(records)).encode()})
            return
        await inner(scope, receive, send)

    return app


def debug_list(base: str, path: str) -> Callable[[], list[dict[str, Any]]]:
    """A function fetching the debug list at ``base + path`` (``with_debug_list``)."""

    def fetch() -> list[dict[str, Any]]:
        return list(httpx2.get(f"{base}{path}", timeout=10).json())

    return fetch


@contextlib.contextmanager
def server_process(module: str, *args: str, ready: str = "/mcp") -> Iterator[str]:
    """Run ``python -m module --port N *args`` on a free port; yield ``http://127.0.0.1:N`` once
    ``ready`` answers over HTTP; stop the child at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}{ready}", proc=proc)
        yield base
    finally:
        stop(proc)


def serve_main(
    description: str | None, app_for: Callable[[argparse.Namespace], ASGIApp], *, json_option: bool = False
) -> None:
    """The command line of a test server: ``--port`` (required) and, with ``json_option``, ``--json``
    (answer POSTs with JSON bodies, not SSE); serves ``app_for(args)`` on 127.0.0.1 with uvicorn."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    if json_option:
        parser.add_argument("--json", action="store_true", help="answer POSTs with JSON bodies, not SSE")
    args = parser.parse_args()
    uvicorn.run(app_for(args), host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")

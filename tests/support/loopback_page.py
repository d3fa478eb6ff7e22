"""A loopback HTTP server that answers every GET with one HTML page: the web page a fetch tool
fetches in the tests (``serve(Site("text"))``; ``site.url`` is its address)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Site", "serve"]


@dataclass
class Site:
    """A loopback HTTP server answering every GET with ``body``; ``hits`` are the paths asked for."""

    body: str
    port: int = 0
    hits: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve(site: Site) -> Iterator[Site]:
    """Serve ``site`` on 127.0.0.1 (an ephemeral port, set on ``site.port``) until the block ends."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.hits.append(self.path)
            payload = f"<html><body><p>{site.body}</p></body></html>".encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()

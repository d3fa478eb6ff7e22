"""A real HTTPS webhook receiver on 127.0.0.1 for end-to-end tests of the approval webhook.

``WebhookReceiver`` serves HTTPS with a certificate from ``tests/support/pki`` (so a gateway
trusts it through ``egress.ca_file``) in a background thread, which lets a synchronous test
drive ``bastion serve`` while it runs. For every POST it checks the signature headers with
``bastion.approvals.webhook.verify`` and the shared secret, records the raw body and headers,
waits ``delay_s`` seconds and answers ``status``. It never fakes the gateway's side: what it
records is exactly what arrived on the wire.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bastion.approvals.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.support.pki import Leaf

__all__ = ["Received", "WebhookReceiver"]


@dataclass(frozen=True)
class Received:
    """One POST the receiver got: request path, head fields (lowercase names), raw body, and
    whether the signature was valid under ``verify`` (with the receiver's secret and clock)."""

    path: str
    headers: dict[str, str]
    body: bytes
    valid: bool


class WebhookReceiver:
    """HTTPS on 127.0.0.1 (a free port) with ``leaf``'s certificate, checking signatures with ``secret``.

    Each POST is recorded in ``received`` (oldest first), then answered ``status`` after
    ``delay_s`` seconds. Use as a context manager: the server runs in a daemon thread from
    ``__enter__`` to ``__exit__``; ``url`` is ``https://127.0.0.1:<port>/hooks/approvals``.
    """

    def __init__(self, leaf: Leaf, secret: bytes, *, status: int = 200, delay_s: float = 0.0) -> None:
        self.secret = secret
        self.status = status
        self.delay_s = delay_s
        self._received: list[Received] = []
        self._lock = threading.Lock()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(leaf.certfile, leaf.keyfile)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        # The handshake runs in the request's thread (on first read), not in the accepting one.
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}/hooks/approvals"

    @property
    def received(self) -> list[Received]:
        """A copy of what arrived so far, oldest first."""
        with self._lock:
            return list(self._received)

    def record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``receiver``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            timestamp = self.headers.get(TIMESTAMP_HEADER, "")
            signature = self.headers.get(SIGNATURE_HEADER, "")
            valid = timestamp.isdigit() and verify(receiver.secret, int(timestamp), body, signature, now=time.time())
            headers = {name.lower(): value for name, value in self.headers.items()}
            receiver.record(Received(self.path, headers, body, valid))
            time.sleep(receiver.delay_s)
            self.send_response(receiver.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads ``received``, not a log."""

    return Handler

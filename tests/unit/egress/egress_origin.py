"""A small HTTP(S) origin server on 127.0.0.1 for the egress tests.

The origin answers a few fixed routes and records what it saw (request head,
TLS server name), so the tests can tell what the guard sent and where:

    /doc                      200, a small JSON document
    /redirect?to=URL[&status] a redirect (302 unless ``status``) to ``to``
    /loop                     302 to itself
    /hop?n=N[&s=S]            after S seconds, 302 to /hop?n=N-1 (to /doc at 0)
    /bytes?n=N                200, N bytes with Content-Length
    /stream?n=N               200, N bytes chunked, no Content-Length
    /slow?s=S                 /doc after S seconds
    /cookie                   302 to /doc setting a cookie
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from tests.support.pki import Leaf

DOC = {"client_id": "https://client.example/metadata.json", "client_name": "Test client"}


@dataclass(frozen=True)
class Seen:
    """One request the origin received: its target and head fields (lowercase names)."""

    target: str
    headers: Mapping[str, str]


class Origin:
    """An HTTP/1.1 server on 127.0.0.1 (TLS with ``leaf``, plain without) that keeps connections alive."""

    def __init__(self, leaf: Leaf | None) -> None:
        self.requests: list[Seen] = []
        self.server_names: list[str | None] = []
        self._context: ssl.SSLContext | None = None
        if leaf is not None:
            self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._context.load_cert_chain(leaf.certfile, leaf.keyfile)
            self._context.sni_callback = self._record_server_name
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._context)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str, host: str = "localhost") -> str:
        scheme = "https" if self._context is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def _record_server_name(self, _sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while head := await _read_head(reader):
                request_line, *fields = head.decode("latin-1").split("\r\n")
                target = request_line.split(" ")[1]
                headers = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields if f)}
                self.requests.append(Seen(target, headers))
                await self._respond(target, writer)
            writer.close()
            await writer.wait_closed()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
            # Not re-raised: asyncio 3.11 logs an error for a connection handler that ends cancelled.
            writer.transport.abort()
        finally:
            self._handlers.discard(task)

    async def _respond(self, target: str, writer: asyncio.StreamWriter) -> None:
        parts = urlsplit(target)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        doc = json.dumps(DOC).encode()
        if parts.path == "/doc":
            _send(writer, 200, {"Content-Type": "application/json"}, doc)
        elif parts.path == "/redirect":
            _send(writer, int(query.get("status", "302")), {"Location": query["to"]})
        elif parts.path == "/loop":
            _send(writer, 302, {"Location": "/loop"})
        elif parts.path == "/hop":
            await asyncio.sleep(float(query.get("s", "0")))
            hops = int(query["n"])
            location = f"/hop?n={hops - 1}&s={query.get('s', '0')}" if hops else "/doc"
            _send(writer, 302, {"Location": location})
        elif parts.path == "/bytes":
            _send(writer, 200, {"Content-Type": "application/octet-stream"}, b"x" * int(query["n"]))
        elif parts.path == "/stream":
            await _send_chunked(writer, int(query["n"]))
        elif parts.path == "/slow":
            await asyncio.sleep(float(query["s"]))
            _send(writer, 200, {"Content-Type": "application/json"}, doc)
        elif parts.path == "/cookie":
            _send(writer, 302, {"Location": "/doc", "Set-Cookie": "session=s3cr3t; Path=/"})
        else:
            _send(writer, 404, {})
        await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """The next request head, or ``b""`` when the client has closed the connection."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""


def _send(writer: asyncio.StreamWriter, status: int, headers: dict[str, str], body: bytes = b"") -> None:
    fields = {**headers, "Content-Length": str(len(body))}
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    writer.write(head.encode("latin-1") + b"\r\n" + body)


async def _send_chunked(writer: asyncio.StreamWriter, size: int) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for start in range(0, size, 4096):
        chunk = b"y" * min(4096, size - start)
        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
    writer.write(b"0\r\n\r\n")

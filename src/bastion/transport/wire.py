"""Reading requests from and writing replies to raw ASGI (no framework on the hot path)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import Receive, Scope, Send

from bastion.errors import BodyTimeout, BodyTooLarge
from bastion.pipeline.context import EmptyReply, HttpRequest, JsonReply, Reply, SseEvent, SseReply

__all__ = ["BODY_DEADLINE", "read_request", "send_reply", "sse_bytes"]

#: The ASGI scope extension by which Bastion's HTTP protocol (``bastion.transport.connections``) gives the
#: application a request's body deadline: ``{"deadline": <event loop time>, "timeout_s": <seconds>}``.
BODY_DEADLINE = "bastion.body_deadline"


def _headers(scope: Scope) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    raw = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"])
    return dict(raw), raw


async def read_request(scope: Scope, receive: Receive, max_body: int) -> HttpRequest:
    """Build an ``HttpRequest`` from the ASGI scope, reading at most ``max_body`` bytes of body.

    Raises ``BodyTooLarge`` (413) as soon as ``Content-Length`` or the bytes
    received exceed the limit, without reading the rest, and ``BodyTimeout``
    (408) when the body is not complete by the scope's ``BODY_DEADLINE`` (none
    outside Bastion's HTTP protocol: in-process tests read without one).
    """
    headers, raw = _headers(scope)
    client = scope.get("client")
    request = HttpRequest(
        method=scope["method"],
        path=scope["path"],
        headers=headers,
        raw_headers=raw,
        client_ip=client[0] if client else None,
    )
    if scope["method"] != "POST":
        return request
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise BodyTooLarge(f"Request body exceeds {max_body} bytes")
    limit = scope.get("extensions", {}).get(BODY_DEADLINE)
    try:
        async with asyncio.timeout_at(limit["deadline"] if limit else None):
            body = await _read_body(receive, max_body)
    except TimeoutError:
        seconds = limit["timeout_s"] if limit else 0
        raise BodyTimeout(f"Request Timeout: the body did not arrive within {seconds:g} s") from None
    return HttpRequest(request.method, request.path, headers, raw, request.client_ip, body)


async def _read_body(receive: Receive, max_body: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise BodyTooLarge(f"Request body exceeds {max_body} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _encode(message: Any) -> bytes:
    # ASCII escapes: always valid UTF-8, whatever strings the upstream sent (lone surrogates too).
    return json.dumps(message, separators=(",", ":")).encode()


def sse_bytes(event: SseEvent) -> bytes:
    """Serialize one event in the ``text/event-stream`` format (HTML Living Standard 9.2.5)."""
    if event.message is None and event.data is None:
        return b": keepalive\n\n"
    lines: list[str] = []
    if event.event:
        lines.append(f"event: {event.event}")
    if event.id:
        lines.append(f"id: {event.id}")
    if event.retry is not None:
        lines.append(f"retry: {event.retry}")
    data = _encode(event.message).decode() if event.message is not None else (event.data or "")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def _header_list(headers: dict[str, str], content_type: str | None) -> list[tuple[bytes, bytes]]:
    out = [(b"content-type", content_type.encode())] if content_type else []
    out.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    return out


async def send_reply(send: Send, reply: Reply) -> int:
    """Write ``reply`` to the ASGI ``send`` channel; return the number of body bytes sent."""
    if isinstance(reply, JsonReply):
        body = b"" if reply.message is None and reply.raw is None else (reply.raw or _encode(reply.message))
        content_type = "application/json" if body else None
        headers = _header_list(reply.headers, content_type)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return len(body)
    if isinstance(reply, EmptyReply):
        headers = _header_list(reply.headers, None)
        headers.append((b"content-length", b"0"))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return 0
    return await _send_sse(send, reply)


async def _send_sse(send: Send, reply: SseReply) -> int:
    headers = _header_list(reply.headers, "text/event-stream")
    headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    sent = 0
    events = reply.events
    try:
        async for event in events:
            chunk = sse_bytes(event)
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"type": "http.response.body", "body": b""})
    return sent

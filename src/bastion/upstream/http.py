"""Streamable HTTP upstreams (MCP 2025-11-25 and 2026-07-28 basic/transports).

``HttpUpstream.send`` makes one HTTP request to the upstream over a pooled
``httpx2.AsyncClient`` and returns an ``UpstreamResponse`` whose body is
either read whole (JSON, errors) or left open as a stream of server-sent
events that the caller relays event by event and must ``aclose()``.

Only the headers MCP defines are forwarded (``FORWARDED_HEADERS``); the
client's ``Authorization``, cookies and anything else never reach the
upstream. The upstream's own credentials come from the route's configured
headers (secret references resolved once at start).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import httpx2

from bastion.errors import UpstreamError, UpstreamUnavailable

__all__ = ["FORWARDED_HEADERS", "HttpUpstream", "UpstreamResponse"]

logger = logging.getLogger(__name__)

FORWARDED_HEADERS = frozenset(
    {"accept", "content-type", "mcp-protocol-version", "mcp-method", "mcp-name", "last-event-id"}
)
"""Downstream headers copied to the upstream (plus every ``mcp-param-*``); nothing else is."""

_MAX_JSON_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class UpstreamResponse:
    """The upstream's answer.

    ``kind`` is ``"json"`` (``body`` holds the bytes), ``"sse"`` (``events``
    yields ``httpx2.ServerSentEvent``), or ``"empty"``. ``session_id`` is the
    upstream's ``Mcp-Session-Id`` header, if any.
    """

    status: int
    kind: str
    content_type: str
    session_id: str | None
    body: bytes = b""
    events: AsyncIterator[httpx2.ServerSentEvent] | None = None
    _response: httpx2.Response | None = field(default=None, repr=False)

    async def aclose(self) -> None:
        """Release the upstream connection (idempotent)."""
        if self._response is not None:
            await self._response.aclose()
            self._response = None


class HttpUpstream:
    """A pooled client for one upstream MCP endpoint ``url``.

    ``extra_headers`` are the route's static upstream headers. ``timeout_s``
    bounds connect and each read (an SSE stream may stay open longer as long
    as events keep arriving).
    """

    def __init__(self, url: str, *, extra_headers: Mapping[str, str] | None = None, timeout_s: float = 60.0):
        self.url = url
        self._extra = dict(extra_headers or {})
        self._client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx2.Limits(max_connections=256, max_keepalive_connections=64),
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._client.aclose()

    def _headers(self, downstream: Mapping[str, str], session_id: str | None) -> dict[str, str]:
        headers = {
            name: value
            for name, value in downstream.items()
            if name in FORWARDED_HEADERS or name.startswith("mcp-param-")
        }
        headers.update(self._extra)
        if session_id is not None:
            headers["mcp-session-id"] = session_id
        return headers

    async def send(
        self,
        method: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        session_id: str | None = None,
    ) -> UpstreamResponse:
        """Send one request; raises ``UpstreamUnavailable`` when the upstream cannot be reached.

        ``headers`` are the downstream request's headers (lowercase names);
        only ``FORWARDED_HEADERS`` are copied.
        """
        request = self._client.build_request(
            method, self.url, headers=self._headers(headers, session_id), content=body
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.TimeoutException as exc:
            raise UpstreamUnavailable(f"upstream timed out: {type(exc).__name__}") from exc
        except httpx2.HTTPError as exc:
            raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}") from exc
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        session = response.headers.get("mcp-session-id")
        if content_type == "text/event-stream" and response.status_code == 200:
            return UpstreamResponse(
                status=response.status_code,
                kind="sse",
                content_type=content_type,
                session_id=session,
                events=self._events(response),
                _response=response,
            )
        try:
            body_bytes = await self._read_capped(response)
        finally:
            await response.aclose()
        kind = "json" if body_bytes else "empty"
        return UpstreamResponse(response.status_code, kind, content_type, session, body=body_bytes)

    @staticmethod
    async def _read_capped(response: httpx2.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > _MAX_JSON_BYTES:
                    raise UpstreamError("upstream response exceeds the size limit")
                chunks.append(chunk)
        except httpx2.HTTPError as exc:
            raise UpstreamUnavailable(f"upstream failed mid-response: {type(exc).__name__}") from exc
        return b"".join(chunks)

    @staticmethod
    async def _events(response: httpx2.Response) -> AsyncIterator[httpx2.ServerSentEvent]:
        try:
            async for event in httpx2.EventSource(response):
                yield event
        except httpx2.HTTPError as exc:
            logger.info("upstream event stream ended: %s", type(exc).__name__)
        finally:
            await response.aclose()

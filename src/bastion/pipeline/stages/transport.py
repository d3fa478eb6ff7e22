"""Stage 1, transport: Origin/Host, media types, one JSON-RPC message, protocol version.

The body has already been read within the size limit by the endpoint.
``TransportStage`` checks a POST; ``StreamTransportStage`` the bodiless GET
(open the session's event stream) and DELETE (end the session) of MCP
2025-11-25 basic/transports.
"""

from __future__ import annotations

from bastion.config.limits import ArgumentLimits
from bastion.errors import ArgumentsTooLarge, NotAcceptable, UnsupportedMediaType
from bastion.pipeline.context import Exchange
from bastion.transport.checks import (
    OriginPolicy,
    accepts,
    check_modern_envelope,
    classify_message,
    parse_message,
    protocol_era,
)
from bastion.transport.sizes import check_arguments

__all__ = ["StreamTransportStage", "TransportStage"]


class TransportStage:
    """Validate the downstream POST and decode its one JSON-RPC message (MCP basic/transports).

    ``params.arguments``, when present, is measured against ``limits`` right after parsing
    (``bastion.transport.sizes``): over a limit the request ends with ``ArgumentsTooLarge``
    (400, -32602) and ``notes["argument_sizes"]`` holds the sizes for the audit record.
    """

    name = "transport"

    def __init__(self, origins: OriginPolicy, limits: ArgumentLimits | None = None) -> None:
        self._origins = origins
        self._limits = limits or ArgumentLimits()

    async def run(self, exchange: Exchange) -> None:
        """Set ``message``, ``kind``, ``era``, ``protocol_version`` and ``accepts_sse``; raise on bad input."""
        headers = exchange.http.headers
        self._origins.check(headers)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise UnsupportedMediaType("Unsupported Media Type: Content-Type must be application/json")
        json_ok, sse_ok = accepts(headers)
        if not (json_ok or sse_ok):
            raise NotAcceptable("Not Acceptable: Accept must include application/json or text/event-stream")
        exchange.accepts_sse = sse_ok
        message = parse_message(exchange.http.body)
        exchange.message = message
        exchange.kind = classify_message(message)  # type: ignore[assignment]
        params = message.get("params")
        if isinstance(params, dict) and "arguments" in params:
            try:
                check_arguments(params["arguments"], self._limits)
            except ArgumentsTooLarge as exc:
                exchange.notes["argument_sizes"] = exc.sizes
                raise
        era, version = protocol_era(headers, message)
        exchange.era = era  # type: ignore[assignment]
        exchange.protocol_version = version
        if era == "modern" and exchange.kind == "request":
            check_modern_envelope(message, headers, exchange.http.raw_headers)


class StreamTransportStage:
    """Check a GET or DELETE: Origin/Host, and for GET ``Accept: text/event-stream``.

    Sets the audit label (``stream/open`` or ``session/delete``): these requests
    carry no JSON-RPC method to record.
    """

    name = "transport"

    def __init__(self, origins: OriginPolicy) -> None:
        self._origins = origins

    async def run(self, exchange: Exchange) -> None:
        """Raise ``ForbiddenOrigin`` (403) or ``NotAcceptable`` (406) on a request Bastion does not serve."""
        method = exchange.http.method
        exchange.notes["label"] = "stream/open" if method == "GET" else "session/delete"
        self._origins.check(exchange.http.headers)
        if method == "GET" and not accepts(exchange.http.headers)[1]:
            raise NotAcceptable("Not Acceptable: GET needs Accept: text/event-stream")

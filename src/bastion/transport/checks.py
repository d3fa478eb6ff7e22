"""Sans-IO checks of the downstream HTTP request (pipeline stage 1, "transport").

Implements the server-side MUSTs of MCP Streamable HTTP (2025-06-18,
2025-11-25 basic/transports) and the stateless 2026-07-28 envelope:

- ``Origin`` validated against an allow list, ``Host`` too (DNS rebinding);
- one JSON-RPC message per POST (batches rejected), JSON-RPC 2.0 shape;
- ``MCP-Protocol-Version`` must name a served version;
- for 2026-07-28 requests, ``params._meta`` carries the envelope and the
  mirrored ``Mcp-Method`` / ``Mcp-Name`` / ``MCP-Protocol-Version`` headers
  equal the body (the SDK's own ladder, ``mcp.shared.inbound``), else -32020;
- for a 2026-07-28 ``tools/call``, each ``Mcp-Param-*`` header that the tool's
  ``inputSchema`` promotes (``x-mcp-header``) equals its argument, else -32020
  (``check_param_headers``, once the classify stage knows the tool).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from mcp.shared.inbound import (
    MCP_PARAM_HEADER_PREFIX,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from bastion.errors import (
    BatchRejected,
    ForbiddenOrigin,
    HeaderMismatch,
    ParseError,
    TransportError,
    UnsupportedVersion,
    clip,
)

__all__ = [
    "DEFAULT_HANDSHAKE_VERSION",
    "MAX_DEPTH",
    "SERVED_HANDSHAKE_VERSIONS",
    "SERVED_MODERN_VERSIONS",
    "OriginPolicy",
    "accepts",
    "check_modern_envelope",
    "check_param_headers",
    "classify_message",
    "has_param_header",
    "parse_message",
    "protocol_era",
]

SERVED_HANDSHAKE_VERSIONS: tuple[str, ...] = tuple(v for v in HANDSHAKE_PROTOCOL_VERSIONS if v >= "2025-03-26")
SERVED_MODERN_VERSIONS: tuple[str, ...] = tuple(MODERN_PROTOCOL_VERSIONS)
DEFAULT_HANDSHAKE_VERSION = "2025-03-26"
"""Assumed when a handshake-era request carries no ``MCP-Protocol-Version`` (2025-06-18 transports)."""


class OriginPolicy:
    """Allowed ``Host`` and ``Origin`` values for one listener.

    ``hosts`` are ``host[:port]`` strings compared case-insensitively;
    ``origins`` are ``scheme://host[:port]``, or ``"*"`` for every origin
    (``server.cors.allowed_origins: ["*"]``). A request without ``Origin`` (a
    non-browser client) passes the origin check; a request without ``Host``
    fails the host check.
    """

    def __init__(self, hosts: Iterable[str], origins: Iterable[str]) -> None:
        self.hosts = frozenset(h.lower() for h in hosts)
        self.origins = frozenset(o.lower().rstrip("/") for o in origins)
        self.any_origin = "*" in self.origins

    @classmethod
    def for_listener(
        cls, base_url: str, port: int, extra_hosts: Iterable[str] = (), extra_origins: Iterable[str] = ()
    ) -> OriginPolicy:
        """Derive the allow lists from the public base URL and the loopback names of ``port``."""
        parts = urlsplit(base_url)
        netloc = parts.netloc.lower()
        loopback = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
        origins = {f"{parts.scheme}://{netloc}"} | {f"http://{h}" for h in loopback}
        return cls(loopback | {netloc} | set(extra_hosts), origins | set(extra_origins))

    def check(self, headers: Mapping[str, str]) -> None:
        """Raise ``ForbiddenOrigin`` (403) when ``Host`` or ``Origin`` is not allowed."""
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            raise ForbiddenOrigin("Host header is not allowed")
        origin = headers.get("origin")
        if origin is not None and not self.any_origin and origin.lower().rstrip("/") not in self.origins:
            raise ForbiddenOrigin("Origin is not allowed")


def accepts(headers: Mapping[str, str]) -> tuple[bool, bool]:
    """``(json, sse)``: whether ``Accept`` admits ``application/json`` and ``text/event-stream``.

    Wildcards follow RFC 9110 section 12.5.1; a missing header accepts both.
    """
    raw = headers.get("accept")
    if raw is None:
        return True, True
    kinds = {part.split(";")[0].strip().lower() for part in raw.split(",")}
    anything = "*/*" in kinds
    return (
        anything or "application/json" in kinds or "application/*" in kinds,
        anything or "text/event-stream" in kinds or "text/*" in kinds,
    )


MAX_DEPTH = 64
"""How deeply arrays and objects may nest in a message (JSON-RPC envelope included)."""

_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_shape(message: Any, *, strings: bool) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and (when ``strings``) strings with lone surrogates.

    Both are valid JSON but break everything downstream (recursion limits,
    UTF-8 encoding in the audit store and in replies). Iterative, one level of
    nesting at a time, so it cannot itself overflow the stack.
    """
    if strings:
        _check_strings([message])
    level: list[Any] = [message] if type(message) is dict or type(message) is list else []
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            raise TransportError(f"Invalid Request: nested deeper than {MAX_DEPTH} levels")
        below: list[Any] = []
        for node in level:
            children = node.values() if type(node) is dict else node
            below += [child for child in children if type(child) is dict or type(child) is list]
            if strings:
                _check_strings([*node, *children] if type(node) is dict else children)
        level = below
        depth += 1


def _check_strings(values: Iterable[Any]) -> None:
    for value in values:
        if type(value) is str:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ParseError("Parse error: a string holds a lone UTF-16 surrogate") from exc


def _not_json(constant: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity``: Python's ``json`` reads them, RFC 8259 has no such values."""
    raise ValueError(f"{constant} is not JSON")


def parse_message(body: bytes) -> dict[str, Any]:
    """Decode one JSON-RPC 2.0 message from ``body``.

    Raises ``ParseError`` (-32700) for invalid JSON (``NaN`` and ``Infinity`` included:
    RFC 8259 section 6 has no such numbers) or UTF-8 or a lone surrogate escape,
    ``BatchRejected`` for an array, ``TransportError`` (-32600) for nesting deeper than
    ``MAX_DEPTH`` or anything not shaped like a JSON-RPC request, notification or response.
    """
    try:
        message = json.loads(body, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        raise ParseError("Parse error: body is not valid JSON") from exc
    surrogates = _ESCAPED_SURROGATE.search(body) is not None
    if surrogates or body.count(b"[") + body.count(b"{") > MAX_DEPTH:
        _check_shape(message, strings=surrogates)
    if isinstance(message, list):
        raise BatchRejected("JSON-RPC batches are not supported; send one message per request")
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise TransportError("Invalid Request: not a JSON-RPC 2.0 message")
    if "id" in message and not (
        isinstance(message["id"], str) or (isinstance(message["id"], int) and not isinstance(message["id"], bool))
    ):
        raise TransportError("Invalid Request: id must be a string or an integer")
    if "method" in message:
        if not isinstance(message["method"], str) or not message["method"]:
            raise TransportError("Invalid Request: method must be a non-empty string")
        if "params" in message and not isinstance(message["params"], dict):
            raise TransportError("Invalid Request: params must be an object")
    elif "id" not in message or ("result" in message) == ("error" in message):
        raise TransportError("Invalid Request: neither a request, a notification nor a response")
    return message


def classify_message(message: Mapping[str, Any]) -> str:
    """``"request"``, ``"notification"`` or ``"response"`` for a message from ``parse_message``."""
    if "method" in message:
        return "request" if "id" in message else "notification"
    return "response"


def protocol_era(headers: Mapping[str, str], message: Mapping[str, Any]) -> tuple[str, str]:
    """``(era, version)`` of the request: ``"modern"`` for 2026-07-28, else ``"handshake"``.

    Raises ``UnsupportedVersion`` (-32022) for an ``MCP-Protocol-Version`` Bastion does
    not serve; its ``data`` names the versions to retry with, as ``server/discover`` lists
    them (the 2026-07-28 ones; a handshake-era client negotiates in ``initialize``), and
    echoes the header (MCP 2026-07-28 basic/transports, ``UnsupportedProtocolVersionError``).
    ``initialize`` is always handshake-era; its version is negotiated from the body.
    """
    version = headers.get("mcp-protocol-version")
    if message.get("method") == "initialize":
        return "handshake", version or DEFAULT_HANDSHAKE_VERSION
    if version is None:
        return "handshake", DEFAULT_HANDSHAKE_VERSION
    if version in SERVED_MODERN_VERSIONS:
        return "modern", version
    if version in SERVED_HANDSHAKE_VERSIONS:
        return "handshake", version
    raise UnsupportedVersion(
        f"Unsupported protocol version: MCP-Protocol-Version {clip(version)!r}",
        data={"supported": list(SERVED_MODERN_VERSIONS), "requested": clip(version)},
    )


def check_modern_envelope(
    message: Mapping[str, Any], headers: Mapping[str, str], raw_headers: Iterable[tuple[str, str]]
) -> None:
    """Run the 2026-07-28 request ladder (``mcp.shared.inbound``) on a request.

    Raises ``HeaderMismatch`` (-32020) when a routing header is repeated or
    differs from the body, ``TransportError`` with the ladder's code otherwise.
    """
    duplicated = find_duplicated_routing_header(raw_headers)
    if duplicated is not None:
        raise HeaderMismatch(f"{duplicated} header appears more than once")
    verdict = classify_inbound_request(message, headers=headers, supported_modern_versions=SERVED_MODERN_VERSIONS)
    if isinstance(verdict, InboundLadderRejection):
        if verdict.code == HeaderMismatch.jsonrpc_code:
            raise HeaderMismatch(verdict.message)
        raise TransportError(verdict.message, data=verdict.data, jsonrpc_code=verdict.code)


_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower()


def has_param_header(raw_headers: Iterable[tuple[str, str]]) -> bool:
    """Whether the request carries any ``Mcp-Param-*`` header (names compared case-insensitively)."""
    return any(name.lower().startswith(_PARAM_PREFIX) for name, _ in raw_headers)


def check_param_headers(
    tool: Mapping[str, Any] | None,
    arguments: Any,
    headers: Mapping[str, str],
    raw_headers: Iterable[tuple[str, str]],
) -> None:
    """Check a 2026-07-28 ``tools/call``'s ``Mcp-Param-*`` headers against its body (SEP-2243).

    ``tool`` is the tool's definition from the catalog (``None``: the upstream does not list
    it, and only the upstream can check). Each property the ``inputSchema`` marks with
    ``x-mcp-header`` must have its header exactly when it has a value, and the (possibly
    ``=?base64?...?=``-encoded) header must equal the value: the SDK's
    ``mcp.shared.inbound.validate_mcp_param_headers``. So a router or a policy reading the
    header sees what the body says, and the policy decides on the body's arguments.
    Raises ``HeaderMismatch`` (-32020) for a mismatch or an ``Mcp-Param-*`` header sent twice.
    """
    counts = Counter(name.lower() for name, _ in raw_headers if name.lower().startswith(_PARAM_PREFIX))
    repeated = next((name for name, count in counts.items() if count > 1), None)
    if repeated is not None:
        raise HeaderMismatch(f"{clip(repeated, 80)} header appears more than once")
    if tool is None or not isinstance(arguments, Mapping | None):
        return
    rejection = validate_mcp_param_headers(tool.get("inputSchema"), arguments or {}, headers)
    if rejection is not None:
        raise HeaderMismatch(rejection.message)

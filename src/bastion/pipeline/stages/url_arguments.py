"""Stage 5b, URL arguments: a tool call whose URL arguments point where they must not is denied.

A ``fetch``-like tool is a server-side request forgery waiting to happen: the
client names a URL and the upstream fetches it from inside the network (MCP
security best practices, SSRF). For a route with ``url_arguments``, every marked
argument of a ``tools/call`` (by name, or by ``"format": "uri"`` in the tool's
input schema) must pass the egress guard's URL and address checks, with the
route's own allow list, before the call is forwarded; a refusal is an
``EgressDenied`` (403, JSON-RPC -32003) and an audit record naming the argument.
With ``format_uri``, a call to a tool whose definition is unknown (the upstream
does not list it, or the catalog could not be loaded) is refused: its URL
arguments could not be told apart, and are never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from bastion.config.routes import UrlArgumentSettings
from bastion.egress.allowlist import AllowList
from bastion.egress.client import EgressGuard
from bastion.errors import EgressDenied, UpstreamUnavailable
from bastion.pipeline.context import Exchange

__all__ = ["UrlArgumentStage", "url_argument_names"]

_MAX_URLS = 32


def url_argument_names(settings: UrlArgumentSettings, tool: Mapping[str, Any] | None) -> list[str]:
    """The top-level argument names to check for a tool: ``settings.names``, plus with
    ``format_uri`` those whose ``inputSchema`` property has ``"format": "uri"`` (or ``uri-reference``)."""
    names = list(settings.names)
    schema = tool.get("inputSchema") if tool else None
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if settings.format_uri and isinstance(properties, Mapping):
        for name, spec in properties.items():
            if isinstance(spec, Mapping) and spec.get("format") in ("uri", "uri-reference") and name not in names:
                names.append(name)
    return names


def _urls(name: str, value: Any) -> Iterator[str]:
    """The URL strings of one argument: a string, or each string of a list. Raises ``EgressDenied``
    for anything else (a marked argument that is not a URL is not forwarded)."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str):
            raise EgressDenied(f"argument {name!r} must be a URL string", data={"argument": name})
        yield item


class UrlArgumentStage:
    """Check the URL arguments of allowed ``tools/call`` requests with ``guard`` (see module docstring)."""

    name = "url_arguments"

    def __init__(self, guard: EgressGuard, settings: UrlArgumentSettings) -> None:
        self._guard = guard
        self._settings = settings
        self._allow = AllowList.parse(settings.allow)

    async def run(self, exchange: Exchange) -> None:
        """Raise ``EgressDenied`` (``data: {"argument": name}``) for the first URL refused."""
        if exchange.action != "tools/call" or exchange.target is None:
            return
        arguments = exchange.params.get("arguments")
        if not isinstance(arguments, dict):
            return
        tool = exchange.route.catalog_for(exchange.principal).get(exchange.target)
        if tool is None and self._settings.format_uri:
            # Which arguments are URLs is read from the tool's input schema: without it, a URL could
            # pass unchecked. The classify stage has already tried to load the catalog; refuse.
            raise EgressDenied(
                "the tool's definition is unknown, so its URL arguments cannot be checked",
                data={"argument": None},
            )
        checked = 0
        for name in url_argument_names(self._settings, tool):
            if name not in arguments:
                continue
            for url in _urls(name, arguments[name]):
                checked += 1
                if checked > _MAX_URLS:
                    raise EgressDenied(f"more than {_MAX_URLS} URL arguments", data={"argument": name})
                try:
                    await self._guard.check(url, allow_http=self._settings.allow_http, allow=self._allow)
                except (EgressDenied, UpstreamUnavailable) as exc:  # a name that does not resolve: refused too
                    raise EgressDenied(f"argument {name!r}: {exc.message}", data={"argument": name}) from None

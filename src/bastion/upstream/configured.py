"""The upstreams of a route as configured: an ``HttpUpstream`` or a (not yet started) ``StdioServer``,
their secret references resolved. Used by the gateway and by ``bastion tools`` and ``bastion check``,
which need no more of the gateway than this."""

from __future__ import annotations

from bastion.config import RouteSettings, SecretRef
from bastion.egress import AllowList, EgressGuard
from bastion.errors import ConfigError
from bastion.upstream.http import HttpUpstream
from bastion.upstream.stdio import StdioServer

__all__ = ["http_upstream", "resolve_values", "stdio_upstream"]


def resolve_values(values: dict[str, str | SecretRef], where: str) -> dict[str, str]:
    """Resolve literal-or-reference values (env vars, headers).

    Raises ``ConfigError`` naming the key, e.g. ``routes.github.stdio.env.GITHUB_TOKEN: ...``.
    """
    resolved: dict[str, str] = {}
    for key, value in values.items():
        try:
            resolved[key] = value.resolve() if isinstance(value, SecretRef) else value
        except ConfigError as exc:
            raise ConfigError(f"{where}.{key}: {exc.message}") from exc
    return resolved


def http_upstream(settings: RouteSettings, guard: EgressGuard) -> HttpUpstream:
    """The HTTP upstream of route ``settings`` (which must have ``http``), every connection through
    ``guard``. Raises ``ConfigError`` for a header secret that does not resolve."""
    http = settings.http
    if http is None:
        raise ConfigError(f"route {settings.name} has no HTTP upstream")
    return HttpUpstream(
        http.url,
        guard=guard,
        allow=AllowList.parse(http.allow),
        allow_http=http.allow_http,
        extra_headers=resolve_values(http.headers, f"routes.{settings.name}.http.headers"),
        timeout_s=http.timeout_s,
    )


def stdio_upstream(settings: RouteSettings) -> StdioServer:
    """The (not yet started) stdio server of route ``settings`` (which must have ``stdio``).
    Raises ``ConfigError`` for an environment secret that does not resolve."""
    stdio = settings.stdio
    if stdio is None:
        raise ConfigError(f"route {settings.name} has no stdio upstream")
    return StdioServer(
        settings.name,
        stdio.command,
        stdio.args,
        env=resolve_values(stdio.env, f"routes.{settings.name}.stdio.env"),
        cwd=str(stdio.cwd) if stdio.cwd else None,
        restart_backoff_s=stdio.restart_backoff_s,
    )

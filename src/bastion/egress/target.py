"""One hop of an outbound fetch: the URL checked and taken apart (sans-IO)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from bastion.egress.addresses import IPAddress, normalise_host, parse_host
from bastion.errors import EgressDenied, clip

__all__ = ["Target", "parse_target", "shown_url"]

_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class Target:
    """Where one hop goes: ``host`` is the ``normalise_host`` form (name or IP text),
    ``address`` the IP when the URL host is an IP literal (else ``None``: resolve
    ``host``), ``path`` the request target (path and query, at least ``/``)."""

    scheme: str
    host: str
    address: IPAddress | None
    port: int
    path: str

    @property
    def authority(self) -> str:
        """``host[:port]`` as the ``Host`` header carries it (port only when not the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL of this hop, normalised, without fragment."""
        return f"{self.scheme}://{self.authority}{self.path}"

    @property
    def shown(self) -> str:
        """The URL without its query, for messages (a query may carry a code or a token)."""
        return f"{self.scheme}://{self.authority}{self.path.partition('?')[0]}"

    def connect_url(self, address: IPAddress) -> str:
        """The URL naming the checked ``address`` instead of the host, so nothing resolves it again."""
        host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_target(url: str, *, allow_http: bool) -> Target:
    """Check ``url`` and take it apart; raises ``EgressDenied`` naming the host and the reason.

    Refused: a URL ``urllib.parse.urlsplit`` cannot read, a scheme other than https
    (and http when ``allow_http``), user info, an empty or malformed host (see
    ``parse_host``), port 0. The fragment is dropped.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressDenied(f"URL is not valid: {clip(str(exc))}") from None
    if not parts.hostname:
        raise EgressDenied("URL has no host")
    host = normalise_host(parts.hostname)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise EgressDenied(f"URL scheme {clip(parts.scheme)!r} for {host} is not allowed (only {', '.join(schemes)})")
    if parts.username is not None or parts.password is not None:
        raise EgressDenied(f"URL for {host} carries user info")
    if port == 0:
        raise EgressDenied(f"port 0 of {host} is not valid")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, parse_host(host), port or _DEFAULT_PORTS[parts.scheme], path)


def shown_url(url: str) -> str:
    """``url`` without user info, query and fragment, for messages; a placeholder when unreadable."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "an unreadable URL"
    return f"{parts.scheme}://{netloc}{parts.path}"

"""Which addresses an outbound fetch may reach, and what a URL host really names (sans-IO).

``classify`` sorts an IP address into public unicast (``None``) or a short
reason it is not a fit destination for a fetch an outsider can steer: the
special-purpose address registries (RFC 6890, IANA IPv4/IPv6 Special-Purpose
Address Registries), cloud metadata endpoints, and IPv6 forms that carry an
IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo), which are judged by the IPv4
address they carry. ``parse_host`` reads a URL host the way a resolver would,
so that ``0x7f.1`` or ``2130706433`` is seen as the ``127.0.0.1`` it is.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import NamedTuple, TypeAlias

from bastion.errors import EgressDenied

__all__ = ["IPAddress", "classify", "describe", "normalise_host", "parse_host"]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Range(NamedTuple):
    """A special-purpose network; ``reason`` None means allowed when the embedded IPv4 is."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    reason: str | None
    embeds_ipv4: bool = False


def _ranges(*rows: tuple[str, str | None] | tuple[str, str | None, bool]) -> tuple[_Range, ...]:
    return tuple(_Range(ipaddress.ip_network(row[0]), *row[1:]) for row in rows)


# First match wins, so the specific rows (metadata endpoints) precede their enclosing networks.
_IPV4_RANGES = _ranges(
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "current-network"),  # RFC 791; Linux connects 0.x.y.z to itself
    ("169.254.169.254/32", "cloud metadata"),  # AWS, GCP, Azure, OCI instance metadata
    ("169.254.170.2/32", "cloud metadata"),  # AWS ECS task metadata and credentials
    ("100.100.100.200/32", "cloud metadata"),  # Alibaba Cloud
    ("168.63.129.16/32", "cloud metadata"),  # Azure WireServer (public space, host-local in Azure)
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),  # RFC 6598
    ("169.254.0.0/16", "link-local"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"),
    ("192.88.99.0/24", "6to4 relay anycast"),  # deprecated, RFC 7526
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_IPV6_RANGES = _ranges(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fd00:ec2::254/128", "cloud metadata"),  # AWS instance metadata over IPv6
    ("::ffff:0:0/96", None, True),  # IPv4-mapped (RFC 4291 2.5.5.2): it is the IPv4 address
    ("64:ff9b::/96", None, True),  # NAT64 well-known prefix (RFC 6052): the IPv4 address via a translator
    ("64:ff9b:1::/48", "NAT64 local-use", True),  # RFC 8215
    ("::ffff:0:0:0/96", "IPv4-translated", True),  # RFC 2765
    ("::/96", "IPv4-compatible", True),  # deprecated, RFC 4291 2.5.5.1
    ("2001::/32", "Teredo", True),  # RFC 4380
    ("2002::/16", "6to4", True),  # RFC 3056
    ("100::/64", "discard-only"),  # RFC 6666
    ("2001:2::/48", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),  # RFC 9637
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),  # deprecated, RFC 3879
    ("ff00::/8", "multicast"),
)
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def classify(address: IPAddress) -> str | None:
    """``None`` if ``address`` is a public unicast destination, else a short reason.

    Reasons: ``"loopback"``, ``"private"``, ``"link-local"``, ``"carrier-grade NAT"``,
    ``"cloud metadata"``, ``"unspecified"``, ``"multicast"``, ``"documentation"``,
    ``"benchmarking"``, ``"unique local"``, ``"site-local"`` ... (the special-purpose
    registries of RFC 6890 and IANA), ``"reserved"`` for anything else not globally
    reachable. An IPv6 address that embeds an IPv4 address (IPv4-mapped, NAT64,
    6to4, Teredo, ...) gets the reason of the IPv4 address when that one is refused.
    """
    table = _IPV4_RANGES if isinstance(address, ipaddress.IPv4Address) else _IPV6_RANGES
    for row in table:
        if address in row.network:
            if row.embeds_ipv4 and isinstance(address, ipaddress.IPv6Address):
                for embedded in _embedded_ipv4(address):
                    if (reason := classify(embedded)) is not None:
                        return reason
            return row.reason
    if not address.is_global:
        return "reserved"
    return None


def describe(reason: str) -> str:
    """``"loopback"`` -> ``"a loopback address"``, for messages."""
    article = "an" if reason[0] in "aeioAEIO" or reason == "unspecified" else "a"
    return f"{article} {reason} address"


def parse_host(host: str) -> IPAddress | None:
    """The IP address a URL host stands for, or ``None`` when it is a DNS name.

    Reads every form ``inet_aton`` accepts (``2130706433``, ``0177.0.0.1``,
    ``0x7f.1``, ``127.1``), bracketed or bare IPv6 (``[::ffff:7f00:1]``) and
    internationalised names, ignoring case and one trailing dot, as the WHATWG URL
    standard's host parser does. Raises ``EgressDenied`` for a host that is neither
    a clean DNS name nor an IP literal: percent-encoding, an IPv6 zone id, a
    numeric last label that is no valid IPv4 address (``1.2.3.4.5``), stray characters.
    """
    return _parse(host)[1]


def normalise_host(host: str) -> str:
    """The canonical text of a URL host: lowercase ASCII name, no trailing dot, or the IP in standard form.

    ``"LOCALHOST."`` -> ``"localhost"``, ``"0x7f.1"`` -> ``"127.0.0.1"``, ``"[::1]"`` -> ``"::1"``.
    Raises ``EgressDenied`` as ``parse_host`` does.
    """
    return _parse(host)[0]


def _parse(host: str) -> tuple[str, IPAddress | None]:
    shown = host.encode("ascii", "backslashreplace").decode()[:80]
    if host.startswith("[") and host.endswith("]"):
        return _parse_ipv6(host[1:-1], shown)
    if ":" in host:
        return _parse_ipv6(host, shown)
    if "%" in host:
        raise EgressDenied(f"host {shown!r} is percent-encoded")
    name = _ascii_name(host, shown).lower()
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise EgressDenied(f"host {shown!r} is not a valid host name")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return name, None
    try:
        packed = socket.inet_aton(name)
    except OSError:
        raise EgressDenied(f"host {shown!r} is not a valid IPv4 address") from None
    address = ipaddress.IPv4Address(packed)
    return str(address), address


def _parse_ipv6(text: str, shown: str) -> tuple[str, IPAddress]:
    if "%" in text:
        raise EgressDenied(f"host {shown!r} has an IPv6 zone id")
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        raise EgressDenied(f"host {shown!r} is not a valid IPv6 address") from None
    return str(address), address


def _ascii_name(host: str, shown: str) -> str:
    """IDNA (RFC 3490, with its nameprep mapping) for a non-ASCII host: fullwidth digits become digits."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise EgressDenied(f"host {shown!r} is not a valid internationalised name") from None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    if address.teredo is not None:
        return address.teredo
    if address.sixtofour is not None:
        return (address.sixtofour,)
    return (ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF),)

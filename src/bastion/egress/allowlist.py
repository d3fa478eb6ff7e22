"""The egress allow list: destinations that are private on purpose (sans-IO)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from bastion.egress.addresses import IPAddress, normalise_host, parse_host
from bastion.errors import ConfigError, EgressDenied

__all__ = ["NO_EXCEPTIONS", "AllowList"]

_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class AllowList:
    """Destinations an outbound fetch may reach although ``classify`` refuses their address.

    ``networks`` permit every address inside them, on any port (``10.0.0.0/8``,
    ``127.0.0.1`` as ``127.0.0.1/32``); ``hosts`` permit a host name, or an IP
    literal, whatever it resolves to, on one port or (port ``None``) on any. Build
    it with ``AllowList.parse(["10.0.0.0/8", "idp.internal:8443"])``; the empty
    allow list permits nothing beyond public addresses.
    """

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[tuple[str, int | None]] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """An allow list from configuration strings: CIDR, IP, ``host``, ``host:port``, ``[v6]:port``.

        Raises ``ConfigError`` naming the entry that is none of these (a CIDR with
        host bits set, such as ``10.0.0.1/8``, is refused as a likely typo).
        """
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        hosts: set[tuple[str, int | None]] = set()
        for entry in entries:
            try:
                if "/" in entry:
                    networks.append(ipaddress.ip_network(entry))
                    continue
                host, port = _split_port(entry)
                address = parse_host(host)
                if address is not None and port is None:
                    networks.append(ipaddress.ip_network(address))
                else:
                    hosts.add((normalise_host(host), port))
            except (ValueError, EgressDenied) as exc:
                raise ConfigError(f"egress allow list entry {entry!r}: {exc}") from None
        return cls(networks=tuple(networks), hosts=frozenset(hosts))

    def permits(self, host: str, address: IPAddress, port: int) -> bool:
        """Whether a fetch of ``host`` (its ``normalise_host`` form) at ``address``:``port`` is allowed.

        An IPv4-mapped IPv6 address is matched as the IPv4 address it maps.
        """
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        if any(candidate in network for candidate in candidates for network in self.networks):
            return True
        name = host.lower()
        return (name, port) in self.hosts or (name, None) in self.hosts


def _split_port(entry: str) -> tuple[str, int | None]:
    """``"idp.internal:8443"`` -> ``("idp.internal", 8443)``; ``"[::1]:8443"``; bare IPv6 has no port."""
    if entry.startswith("["):
        host, bracket, rest = entry.partition("]")
        host += bracket
    elif entry.count(":") == 1:
        host, rest = entry.split(":")
        rest = ":" + rest
    else:
        host, rest = entry, ""
    if not rest:
        return host, None
    port = rest.removeprefix(":")
    if not rest.startswith(":") or not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return host, int(port)


#: The empty allow list: public addresses only.
NO_EXCEPTIONS = AllowList()

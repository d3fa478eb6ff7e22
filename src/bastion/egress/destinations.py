"""Where a connection may go: resolve a host once, then check every address it names.

``refusal`` is the one address rule of the egress guard (sans-IO): an address is
fit when ``classify`` finds it public, or when an allow list permits it for that
host and port; an IPv6 address with a zone id never is. ``Destinations`` applies
it to a host: the IP literal itself, or every address the name resolves to (one
lookup), and refuses the whole host when any address is refused, so a name cannot
hide a private address among public ones.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from bastion.egress.addresses import IPAddress, classify, describe
from bastion.egress.allowlist import NO_EXCEPTIONS, AllowList
from bastion.errors import EgressDenied, UpstreamUnavailable

__all__ = ["Destinations", "Resolver", "refusal", "resolve"]

#: ``(host, port) -> addresses``: how the guard resolves a host name, once per connection or hop.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The IPv4 and IPv6 addresses of ``host`` from the event loop's ``getaddrinfo``, in its order.

    Raises ``OSError`` (``socket.gaierror``) when the name does not resolve.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    families = (socket.AF_INET, socket.AF_INET6)
    return [ipaddress.ip_address(str(info[4][0])) for info in infos if info[0] in families]


def refusal(host: str, address: IPAddress, port: int, *allowed: AllowList) -> str | None:
    """``None`` when ``host`` (its ``normalise_host`` form) may be reached at ``address``:``port``,
    else why not, for a message: ``"a loopback address"``, ``"a cloud metadata address"`` ...

    Public unicast addresses (``classify``, RFC 6890 and the IANA special-purpose registries)
    pass; any other passes only when one of ``allowed`` permits it. An IPv6 address with a
    zone id (RFC 6874) never passes: it names an interface, not a destination.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "an address with a zone id"
    reason = classify(address)
    if reason is None or any(allow.permits(host, address, port) for allow in allowed):
        return None
    return describe(reason)


class Destinations:
    """The address check of every outbound connection: ``allow`` is the global allow list
    (``egress.allow``), ``resolver`` looks a name up (``resolve``: ``getaddrinfo``)."""

    def __init__(self, allow: AllowList, resolver: Resolver) -> None:
        self.allow = allow
        self._resolve = resolver

    async def addresses(
        self, host: str, literal: IPAddress | None, port: int, extra: AllowList = NO_EXCEPTIONS
    ) -> list[IPAddress]:
        """The addresses to connect to for ``host``:``port``: ``literal`` (the IP the URL names, if
        it names one), or every address the name resolves to, duplicates dropped, in order.

        ``host`` is in its ``normalise_host`` form. Raises ``EgressDenied`` naming the host, the
        address and the reason when any address is refused and allowed neither by ``allow`` nor
        by ``extra``; ``UpstreamUnavailable`` when the name does not resolve or resolves to nothing.
        """
        if literal is not None:
            if (why := refusal(host, literal, port, self.allow, extra)) is not None:
                raise EgressDenied(f"{host} is {why}")
            return [literal]
        try:
            addresses = list(dict.fromkeys(await self._resolve(host, port)))
        except OSError as exc:
            raise UpstreamUnavailable(f"{host} could not be resolved") from exc
        if not addresses:
            raise UpstreamUnavailable(f"{host} resolves to no address")
        for address in addresses:
            if (why := refusal(host, address, port, self.allow, extra)) is not None:
                raise EgressDenied(f"{host} resolves to {address}, {why}")
        return addresses

"""The egress guard inside aiohttp: a resolver that refuses forbidden destinations.

``HttpUpstream`` talks to its upstream with aiohttp (the hot path; see
``bastion.upstream.http``). Its ``TCPConnector`` takes a ``GuardedResolver``,
so every new connection asks the guard first: the name is resolved once
(``EgressGuard.checked_addresses``: the guard's resolver), every address is
checked with the guard's rules (``classify``, the route's allow list, then
``egress.allow``), and aiohttp connects to exactly the numeric addresses returned
here (it builds its socket addresses from them: no second lookup, so DNS rebinding
cannot swap them).

A refusal is raised as ``EgressRefused``, an ``OSError`` that aiohttp wraps in
``aiohttp.ClientConnectorDNSError`` (``os_error`` holds it); ``HttpUpstream``
turns it back into ``bastion.errors.EgressDenied``. aiohttp does not call the
resolver for an IP literal host, so ``HttpUpstream`` checks a literal itself.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from bastion.egress.allowlist import NO_EXCEPTIONS, AllowList
from bastion.egress.client import EgressGuard
from bastion.errors import EgressDenied, UpstreamUnavailable

__all__ = ["EgressRefused", "GuardedResolver"]

_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class EgressRefused(OSError):
    """The guard refused a connection aiohttp was about to make; ``denial`` is its ``EgressDenied``."""

    def __init__(self, denial: EgressDenied) -> None:
        super().__init__(denial.message)
        self.denial = denial


class GuardedResolver(AbstractResolver):
    """An ``aiohttp.abc.AbstractResolver`` that resolves through ``guard``.

    ``allow`` is permitted besides the guard's own list (a route's ``http.allow``);
    ``purpose`` and ``url`` label refusals (``Refusal``). ``resolve`` returns the checked
    addresses of the asked family (``AF_UNSPEC``: all) as numeric results; it raises
    ``EgressRefused`` when any address is refused, and a plain ``OSError`` when the name
    does not resolve or has no address of that family (aiohttp: ``ClientConnectorDNSError``).
    """

    def __init__(
        self, guard: EgressGuard, *, allow: AllowList = NO_EXCEPTIONS, purpose: str = "upstream", url: str | None = None
    ) -> None:
        self._guard = guard
        self._allow = allow
        self._purpose = purpose
        self._url = url

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The checked addresses of ``host``:``port`` (see the class docstring)."""
        try:
            addresses = await self._guard.checked_addresses(
                host, port, allow=self._allow, purpose=self._purpose, url=self._url
            )
        except EgressDenied as exc:
            raise EgressRefused(exc) from None
        except UpstreamUnavailable as exc:
            raise OSError(exc.message) from exc
        results: list[ResolveResult] = []
        for address in addresses:
            kind = socket.AF_INET6 if isinstance(address, ipaddress.IPv6Address) else socket.AF_INET
            if family in (socket.AF_UNSPEC, kind):
                results.append(
                    ResolveResult(hostname=host, host=str(address), port=port, family=kind, proto=0, flags=_NUMERIC)
                )
        if not results:
            raise OSError(f"{host} has no address of family {family.name}")
        return results

    async def close(self) -> None:
        """Nothing to release: the guard belongs to its owner."""

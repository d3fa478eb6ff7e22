"""What the egress guard tells about a connection it refused, and to whom (the refusal hook).

Every refusal by policy (``EgressDenied``) of a fetch, a request, a URL check or an
upstream connection is described by one ``Refusal`` and handed to the hook the
guard was built with (the gateway's writes an audit record, ``bastion.egress.auditing``).
Reporting never changes the outcome: the refusal stands whether the hook succeeds,
fails or is missing (fail closed), and a failing hook is logged, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Refusal", "RefusalHook", "report"]

logger = logging.getLogger("bastion.egress")


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused outbound connection.

    ``url`` is the URL of the refused hop as ``shown_url`` gives it (no user info, query or
    fragment: they may carry credentials or codes); ``reason`` the refusal's message
    (``"127.0.0.1 is a loopback address"``); ``hop`` 0 for the URL asked for and n for the
    n-th redirect followed from it; ``purpose`` the caller's label of what the connection was
    for: ``"jwks"``, ``"client_metadata"``, ``"openid_discovery"``, ``"upstream"``,
    ``"url_argument"``, or the guard's defaults ``"fetch"`` and ``"send"``.
    """

    url: str
    reason: str
    hop: int
    purpose: str


#: Called once per refusal, before the refusal is raised to the caller.
RefusalHook = Callable[[Refusal], Awaitable[None]]


async def report(hook: RefusalHook | None, refusal: Refusal) -> None:
    """Hand ``refusal`` to ``hook`` (if any). Never raises an ``Exception``: a failing hook (an
    audit log that cannot write) is logged at error level and the refusal still stands."""
    if hook is None:
        return
    try:
        await hook(refusal)
    except Exception as exc:  # noqa: BLE001 - the caller refuses regardless (fail closed); never crash it
        logger.error("egress refusal of %s (%s) was not recorded: %s", refusal.url, refusal.purpose, exc)

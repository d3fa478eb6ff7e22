"""The definitions check: a call on a quarantined or hidden definition, or any request on a blocked
route, is refused before the decision (issue 15, "Pinning and quarantine").

Runs after classify and continuation, so the target is known (a ``tools/call``'s tool, with its
definition from the caller's catalog, loaded by classify when unknown; a task request's tool; a
``prompts/get`` or ``completion/complete``'s prompt; a ``resources/read``'s URI) and is judged by
the route's ``DefinitionGuard`` (``bastion.catalog.guard``): a definition that is new or changed
since its pin, or hidden by a scanner finding, answers ``DefinitionQuarantined`` (-32003, naming
the tool, the reason and the commands an administrator runs); a route a finding blocks answers
every request ``RouteBlocked``, and so does a GET that would open the session's event stream (the
stage is in ``STREAM_SLOTS`` too). Either way nothing is forwarded and the refusal is the request's
one deny record. Notifications and responses pass (a client's answer to a server request), and so
does a DELETE (the end of a session).
"""

from __future__ import annotations

from bastion.catalog.guard import DefinitionGuard
from bastion.pipeline.context import Exchange
from bastion.scan.findings import DefinitionKind

__all__ = ["DefinitionStage"]

_KINDS: dict[str, DefinitionKind] = {"tools/call": "tool", "prompts/get": "prompt", "resources/read": "resource"}
"""The action of a call → the kind of definition it uses."""


class DefinitionStage:
    """Refuse calls on held definitions, and every request on a blocked route (see the module docstring)."""

    name = "definitions"

    def __init__(self, guard: DefinitionGuard) -> None:
        self._guard = guard

    async def run(self, exchange: Exchange) -> None:
        """Raise ``RouteBlocked`` or ``DefinitionQuarantined``; else leave the exchange as it is."""
        guard = self._guard
        opens_stream = exchange.http.method == "GET"  # the session's event stream (STREAM_SLOTS)
        if exchange.kind != "request" and not opens_stream:
            return
        if guard.blocked:
            await guard.refresh()
            if guard.blocked:
                raise guard.blocked_error()
        kind = _KINDS.get(exchange.action or "")
        target = exchange.target
        if kind is None or target is None or not guard.active:
            return
        if kind == "tool":
            catalog = exchange.route.catalog_for(exchange.principal)
            definition = catalog.get(target)
            sha256 = catalog.hashes.get(target) if definition is not None else None
            await guard.admit(kind, target, definition, sha256, principal=exchange.principal)
        else:
            await guard.admit(kind, target, None, principal=exchange.principal)

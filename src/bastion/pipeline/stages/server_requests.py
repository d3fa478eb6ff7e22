"""Server-to-client requests decided like calls (a message filter).

An MCP server may ask the client for things while it serves a call: an LLM
completion (``sampling/createMessage``), input from the person
(``elicitation/create``), the client's roots (``roots/list``) (MCP 2025-11-25
client/sampling, client/elicitation, client/roots). Each is a Cedar request:
the caller's principal, the action named by the method, the route's
``Server::"<route>"`` as resource, the caller's context. Deny by default.

A permitted request is recorded (a durable decision record naming the call that
caused it as ``target``) and relayed; a denied one is recorded, never reaches
the client, and the upstream gets a JSON-RPC error in the client's place
(``UpstreamAnswer``), so it does not wait forever. ``ping`` needs no decision;
any other server-to-client request is denied. A 2026-07-28 client has no such
requests (multi round-trip requests replace them): refused likewise.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bastion.errors import PolicyDenied
from bastion.limits.activity import SessionActivity
from bastion.pipeline.context import Exchange
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.authorize import policy_context
from bastion.policy import Decision, PolicyEngine, ResourceRef
from bastion.stores.sessions import SentRequest

__all__ = ["SERVER_REQUESTS", "ServerRequestFilter", "UpstreamAnswer"]

logger = logging.getLogger(__name__)

SERVER_REQUESTS = frozenset({"sampling/createMessage", "elicitation/create", "roots/list"})
"""The server-to-client requests a policy can permit (one Cedar action each)."""

UpstreamAnswer = Callable[[Exchange, dict[str, Any]], Awaitable[None]]
"""Sends a JSON-RPC response to the upstream in the client's place (the forward stage's ``answer``)."""

_NO_DECISION = Decision(effect="deny", policy_ids=(), obligations={}, errors=())


_APPROVAL_ONLY_FOR_CALLS = "a permit asking for approval (@approval) does not permit a server-to-client request"


class ServerRequestFilter:
    """Decide, record and relay or refuse server-to-client requests (see module docstring)."""

    name = "server_requests"
    audits_own_drops = True

    def __init__(
        self, engine: PolicyEngine, audit: AuditStage, answer: UpstreamAnswer, activity: SessionActivity | None = None
    ) -> None:
        self._engine = engine
        self._audit = audit
        self._answer = answer
        self._activity = activity if activity is not None and activity.track_labels else None

    async def apply(
        self, exchange: Exchange, message: dict[str, Any], answered: SentRequest | None
    ) -> dict[str, Any] | None:
        """Return ``message`` when it may reach the client, else ``None`` (answered upstream)."""
        method = message.get("method")
        if not isinstance(method, str) or "id" not in message or method == "ping":
            return message  # notifications and responses are not server-to-client requests
        try:
            decision = await self._decide(exchange, method)
            await self._audit.record_server_request(exchange, method, decision)
        except Exception:
            await self._refuse(exchange, message, "Internal error: the request could not be decided")
            raise
        if decision.allowed:
            return message
        ids = list(decision.policy_ids)
        await self._refuse(exchange, message, f"Denied by policy {', '.join(ids)}" if ids else "Denied by Bastion")
        return None

    async def _decide(self, exchange: Exchange, method: str) -> Decision:
        """The decision on a server-to-client request, in the context of the call it came with (the
        caller's ``session_labels`` included). Raises what the activity store raises."""
        principal = exchange.principal
        if method not in SERVER_REQUESTS or principal is None or exchange.era != "handshake":
            return _NO_DECISION
        resource = ResourceRef.server(exchange.route.name)
        labels = await self._activity.session_labels(exchange) if self._activity is not None else frozenset()
        decision = self._engine.decide(principal, method, resource, policy_context(exchange, None, labels))
        if decision.allowed and "approval" in decision.obligations:
            # approvals are given to tool calls only: a permit asking for one here permits nothing
            return Decision("deny", decision.policy_ids, decision.obligations, (_APPROVAL_ONLY_FOR_CALLS,))
        return decision

    async def _refuse(self, exchange: Exchange, message: dict[str, Any], text: str) -> None:
        error = {"code": PolicyDenied.jsonrpc_code, "message": text}
        try:
            await self._answer(exchange, {"jsonrpc": "2.0", "id": message["id"], "error": error})
        except Exception:
            logger.exception("answering a refused server-to-client request upstream failed")

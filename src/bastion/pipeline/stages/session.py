"""Stage 3, session: bind handshake-era MCP sessions to the principal that opened them.

``initialize`` opens a session (its id is returned by the forward stage);
every other handshake-era message must carry ``MCP-Session-Id`` of a session
this principal opened on this route, else 404 (MCP 2025-11-25
basic/transports, "Session Management"). The 2026-07-28 protocol has no
sessions. The session never authenticates: stage 2 has already run. A GET
(event stream) or DELETE needs a session too; a GET without one is answered
405 (MCP 2025-11-25 basic/transports: no stream offered outside a session).
A route changed by a reload ends the sessions opened before (``opened_after``): each is
forgotten when next presented and answered 404, so its client initializes again.
"""

from __future__ import annotations

import logging

from bastion.errors import BastionError, SessionNotFound, SessionRequired, SessionsUnavailable
from bastion.pipeline.context import EmptyReply, Exchange
from bastion.pipeline.stages.authorize import SESSION_DECISION
from bastion.stores.sessions import SessionStore

__all__ = ["SessionStage"]

logger = logging.getLogger(__name__)


class SessionStage:
    """Look up (or, for ``initialize``, open) the exchange's session."""

    name = "session"

    def __init__(self, sessions: SessionStore, *, opened_after: float | None = None) -> None:
        """``opened_after``: epoch seconds; a session created before is ended (the route changed since)."""
        self._sessions = sessions
        self._opened_after = opened_after

    async def run(self, exchange: Exchange) -> None:
        """Set ``exchange.session``; raise ``SessionRequired`` (400), ``SessionNotFound`` (404) or
        ``SessionsUnavailable`` (503: the store failed, e.g. Redis unreachable)."""
        try:
            await self._run(exchange)
        except BastionError:
            raise
        except Exception as exc:
            logger.warning("the session store failed: %r", exc)
            raise SessionsUnavailable("Refused: sessions cannot be looked up now; try again later") from exc

    async def _run(self, exchange: Exchange) -> None:
        bodiless = exchange.http.method != "POST"
        if exchange.era != "handshake" and not bodiless:
            return
        principal = exchange.principal
        if principal is None:
            raise BastionError("session stage reached without a principal")
        if exchange.method == "initialize":
            exchange.session = await self._sessions.create(exchange.route.name, principal.key)
            exchange.new_session = True
            return
        session_id = exchange.http.headers.get("mcp-session-id")
        if not session_id and exchange.http.method == "GET":
            exchange.decision = SESSION_DECISION
            exchange.reply = EmptyReply(405, {"allow": "POST, DELETE"})
            return
        if not session_id:
            raise SessionRequired("Bad Request: MCP-Session-Id header is required")
        session = await self._sessions.get(session_id, exchange.route.name, principal.key)
        if session is not None and self._opened_after is not None and session.created < self._opened_after:
            await self._sessions.delete(session.id)  # opened on the route before a reload changed it
            session = None
        if session is None:
            raise SessionNotFound("Session not found")
        exchange.session = session

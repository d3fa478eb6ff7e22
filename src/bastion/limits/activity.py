"""Session caps and data-flow labels: what a caller has done, as the request path needs it (issue 14).

Two uses of one ``ActivityStore`` (``bastion.stores.activity``):

- **Session caps** (``session_caps:``, a route's own ``session_caps:``): the limits stage
  admits a permitted call only while its session is under every cap (calls, destructive
  calls, distinct tools, bytes returned); the runner adds the bytes of each answer sent.
  The session is the MCP session (``session:<id>``, kept as long as the session idles,
  ``server.session_idle_s``); a call without one (2026-07-28) counts per route, principal
  and OAuth client, kept until ``session_caps.window`` passes without a call.
- **Data-flow labels** (``data_flow:``): each admitted call marks the labels of its tool
  (``routes[].tools.<name>.labels``) on the caller's flow key, and the authorize stage gives
  Cedar the labels marked so far as ``context.session_labels``, so a policy can refuse an
  ``external_sink`` call once ``private_data`` and ``untrusted_content`` were touched. The
  flow key is the ``data_flow.scope``: ``client`` (principal and OAuth client, across
  routes), ``session`` (the MCP session; ``client`` without one) or ``principal``; kept
  until ``data_flow.window`` passes without a call (a session's labels: its idle time).

Labels are marked when the checks admit the call (the limits slot), before an approval
decision or the upstream's answer: a call refused later still marks them (an over-count can
deny a later call; an under-count could let one pass). Counted: ``tools/call``,
``resources/read`` and ``prompts/get`` that a policy permitted (resources and prompts carry
no labels and are never destructive).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from bastion.config.limits import DataFlowSettings, SessionCaps
from bastion.errors import SessionCapReached
from bastion.pipeline.context import Exchange
from bastion.principal import Principal
from bastion.stores.activity import ActivityStore, CapRefusal, Caps

__all__ = ["SessionActivity"]

COUNTED_ACTIONS = frozenset({"tools/call", "resources/read", "prompts/get"})

_CAP_TEXT = {
    "calls": "calls",
    "destructive_calls": "destructive calls",
    "distinct_tools": "different tools",
    "result_bytes": "bytes of results",
}


class SessionActivity:
    """Session caps and data-flow labels for the request path.

    ``caps`` maps a route name to its ``SessionCaps`` (a route absent or with no cap set is not
    capped); ``data_flow`` is ``config.data_flow``; ``track_labels`` whether labels are kept at
    all (some tool has labels and a policy reads ``context.session_labels``); ``session_idle_s``
    how long a session lives idle (its key lives as long); ``clock`` epoch seconds.
    """

    def __init__(
        self,
        store: ActivityStore,
        *,
        caps: Mapping[str, SessionCaps],
        data_flow: DataFlowSettings,
        track_labels: bool,
        session_idle_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.use_caps(caps)
        self._flow = data_flow
        self.track_labels = track_labels
        self._session_idle_s = float(session_idle_s)
        self._clock = clock

    def use_caps(self, caps: Mapping[str, SessionCaps]) -> None:
        """Count against ``caps`` (route name to ``SessionCaps``) from now on (start, a reload of the routes)."""
        self._caps = {
            route: (Caps(c.calls, c.destructive_calls, c.distinct_tools, c.result_bytes), float(c.window))
            for route, c in caps.items()
            if c.active
        }

    @property
    def active(self) -> bool:
        """Whether there is anything to count (a cap on some route, or labels to track)."""
        return bool(self._caps) or self.track_labels

    def capped(self, route: str) -> bool:
        """Whether ``route`` has session caps."""
        return route in self._caps

    def _caps_key(self, exchange: Exchange, principal: Principal, window_s: float) -> tuple[str, float]:
        """The key and idle time of the caller's session for caps (see the module docstring)."""
        if exchange.session is not None:
            return f"session:{exchange.session.id}", self._session_idle_s
        return f"route:{exchange.route.name}\x1f{principal.key}\x1f{principal.client_id or ''}", window_s

    def _flow_key(self, exchange: Exchange, principal: Principal) -> tuple[str, float]:
        """The key and idle time of the caller's data-flow scope (``data_flow.scope``)."""
        scope = self._flow.scope
        if scope == "session" and exchange.session is not None:
            return f"session:{exchange.session.id}", self._session_idle_s
        if scope == "principal":
            return f"principal:{principal.key}", float(self._flow.window)
        return f"client:{principal.key}\x1f{principal.client_id or ''}", float(self._flow.window)

    async def session_labels(self, exchange: Exchange) -> frozenset[str]:
        """The labels of the tools the caller touched so far in its flow scope (empty when labels
        are not tracked). Raises what the store raises."""
        if not self.track_labels or exchange.principal is None:
            return frozenset()
        key, _ = self._flow_key(exchange, exchange.principal)
        return await self._store.labels(key, now=self._clock())

    async def admit(self, exchange: Exchange) -> None:
        """Count a permitted call against its session's caps and mark its tool's labels. Raises
        ``SessionCapReached`` (nothing counted) when a cap refuses it, what the store raises when
        it cannot answer."""
        decision, principal, resource = exchange.decision, exchange.principal, exchange.resource
        if decision is None or not decision.allowed or principal is None or exchange.action not in COUNTED_ACTIONS:
            return
        now = self._clock()
        is_tool = resource is not None and resource.kind == "Tool"
        capped = self._caps.get(exchange.route.name)
        if capped is not None:
            caps, window_s = capped
            key, idle_s = self._caps_key(exchange, principal, window_s)
            refusal = await self._store.admit(
                key, caps,
                tool=exchange.target if is_tool else None,
                destructive=is_tool and resource is not None and resource.attrs.get("risk") == "destructive",
                now=now, idle_s=idle_s,
            )  # fmt: skip
            if refusal is not None:
                raise _refused(exchange, refusal, window_s)
        if self.track_labels:
            key, idle_s = self._flow_key(exchange, principal)
            labels = resource.attrs.get("labels", ()) if is_tool and resource is not None else ()
            await self._store.mark(key, labels, now=now, idle_s=idle_s)

    async def returned(self, exchange: Exchange) -> None:
        """After the answer was sent: add its bytes (``exchange.response_bytes``) to the session's
        ``result_bytes`` cap. Raises what the store raises."""
        capped = self._caps.get(exchange.route.name)
        principal = exchange.principal
        if (
            capped is None
            or capped[0].result_bytes is None
            or principal is None
            or exchange.action not in COUNTED_ACTIONS
            or not exchange.response_bytes
        ):
            return
        key, idle_s = self._caps_key(exchange, principal, capped[1])
        await self._store.add_bytes(key, exchange.response_bytes, now=self._clock(), idle_s=idle_s)

    async def sweep(self, now: float) -> int:
        """Forget the keys idle at ``now`` (``ActivityStore.sweep``; 0 with Redis, which expires them itself)."""
        return await self._store.sweep(now)


def _refused(exchange: Exchange, refusal: CapRefusal, window_s: float) -> SessionCapReached:
    if exchange.session is not None:
        where, remedy = "this session", "start a new session"
    else:
        where, remedy = "your calls on this route", f"they count until {int(window_s)} s pass without a call"
    used = f" ({refusal.used} used)" if refusal.cap == "result_bytes" else ""
    error = SessionCapReached(
        f"Refused by session cap {refusal.cap}: {where} reached {refusal.limit} {_CAP_TEXT[refusal.cap]}{used}; "
        f"{remedy}",
        cap=refusal.cap, limit=refusal.limit, used=refusal.used,
    )  # fmt: skip
    error.as_tool_result = exchange.route.settings.denials == "tool_error"
    return error

"""The per-request context every stage reads and enriches, and the replies a stage can set.

One ``Exchange`` is created per HTTP request on a route and passed explicitly
to each stage in order. A stage ends the request by setting ``exchange.reply``
(a deny, or the upstream's answer); the runner stops calling "before" stages
as soon as a reply is set.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bastion.errors import BastionError
from bastion.ids import new_id
from bastion.principal import Principal

if TYPE_CHECKING:
    from bastion.policy import Decision, ResourceRef
    from bastion.stores.sessions import Session
    from bastion.transport.routes import RouteRuntime

__all__ = ["EmptyReply", "Exchange", "HttpRequest", "JsonReply", "Reply", "SseEvent", "SseReply"]

MessageKind = Literal["request", "notification", "response"]
Era = Literal["handshake", "modern"]


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """The parts of the downstream HTTP request the stages look at.

    ``headers`` maps lowercase names to the last value; ``raw_headers`` keeps
    every ``(name, value)`` pair (lowercase names) so duplicates can be found.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    raw_headers: tuple[tuple[str, str], ...]
    client_ip: str | None
    body: bytes = b""


@dataclass(slots=True)
class JsonReply:
    """An ``application/json`` answer; ``message`` is ``None`` for an empty body (e.g. 202)."""

    status: int
    message: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


@dataclass(slots=True)
class SseEvent:
    """One server-sent event: ``message`` is a decoded JSON-RPC message, or ``None``
    with ``data`` holding text that is not JSON (relayed as is). ``id`` and
    ``event`` are relayed so ``Last-Event-ID`` resumption keeps working.
    """

    message: Any = None
    data: str | None = None
    id: str = ""
    event: str = ""
    retry: int | None = None


@dataclass(slots=True)
class SseReply:
    """A ``text/event-stream`` answer relayed event by event as ``events`` yields them."""

    status: int
    events: AsyncIterator[SseEvent]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class EmptyReply:
    """A bodiless answer such as ``202 Accepted`` or ``405``."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)


Reply = JsonReply | SseReply | EmptyReply


@dataclass(slots=True)
class Exchange:
    """Everything known about one request as it moves through the pipeline."""

    route: RouteRuntime
    http: HttpRequest
    started: float = field(default_factory=time.perf_counter)
    decision_id: str = field(default_factory=new_id)
    message: dict[str, Any] | None = None
    kind: MessageKind | None = None
    era: Era = "handshake"
    protocol_version: str | None = None
    accepts_sse: bool = False
    principal: Principal | None = None
    session: Session | None = None
    new_session: bool = False
    action: str | None = None
    target: str | None = None
    resource: ResourceRef | None = None
    decision: Decision | None = None
    reply: Reply | None = None
    error: BastionError | None = None
    audited: bool = False
    upstream_status: int | None = None
    credential_kind: str = "none"
    credential_principal: str | None = None
    response_bytes: int = 0
    result_error: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str | None:
        """The JSON-RPC ``method`` of a request or notification, else ``None``."""
        if self.message is None:
            return None
        method = self.message.get("method")
        return method if isinstance(method, str) else None

    @property
    def params(self) -> dict[str, Any]:
        """The JSON-RPC ``params`` object, or an empty dict."""
        if self.message is None:
            return {}
        params = self.message.get("params")
        return params if isinstance(params, dict) else {}

    @property
    def rpc_id(self) -> Any:
        """The JSON-RPC ``id`` (``None`` for notifications or unparsed bodies)."""
        return None if self.message is None else self.message.get("id")

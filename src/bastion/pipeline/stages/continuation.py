"""Stage 4b, continuation: multi round-trip retries and task requests, bound to who started them.

MCP 2026-07-28 splits one call over several requests in two ways (see
``bastion.stores.continuations``): a retry that carries the ``requestState`` of
an ``input_required`` result (SEP-2322), and, with the tasks extension
(``io.modelcontextprotocol/tasks``, SEP-2663), ``tasks/get``, ``tasks/update``
and ``tasks/cancel`` naming the task a ``tools/call`` created.

``ContinuationFilter`` (a message filter) records each ``requestState`` and task
id the upstream returns to a principal; ``ContinuationStage`` (a check, after
classify) lets a later request present one only when it was issued to the same
principal on the same route, for the same request: otherwise
``UnknownContinuation`` (-32602) and nothing is forwarded. Neither skips the
decision: a retry is decided by Cedar like any call, and a task request is
decided as a ``tools/call`` of the task's tool with the arguments that created it,
so that revoking a permission also stops reading and steering the tasks it
allowed. The decision record names the first call of the chain
(``decision.continues``); the outcome of a call that returned ``input_required``
or a task is flagged so (``result.flags``).

``tasks/*`` from a request whose ``_meta`` does not declare the tasks extension is
refused with ``MissingCapability`` (-32021), as the extension requires; one whose
``Mcp-Name`` header names another task than ``params.taskId`` with ``HeaderMismatch`` (-32020).
A store that cannot answer (a shared one, ``stores.redis``, unreachable) refuses the request with
``ContinuationsUnavailable`` (503); a filter that cannot record what was issued fails, and the
message carrying it is not relayed (``bastion.pipeline.filters``): fail closed either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mcp.shared.inbound import decode_header_value
from mcp_types.methods import INPUT_REQUIRED_METHODS

from bastion.approvals.state import is_bastion_state
from bastion.errors import ContinuationsUnavailable, HeaderMismatch, MissingCapability, UnknownContinuation
from bastion.pipeline.context import Exchange
from bastion.pipeline.filters import answers_own
from bastion.pipeline.stages.classify import TASK_METHODS, string_param
from bastion.stores.continuations import (
    DEFAULT_STATE_TTL_S,
    MAX_TASK_TTL_S,
    Continuation,
    ContinuationKind,
    ContinuationStore,
)
from bastion.stores.sessions import SentRequest

__all__ = ["TASKS_EXTENSION", "ContinuationFilter", "ContinuationStage", "declares_extension"]

logger = logging.getLogger(__name__)

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
"""The tasks extension's identifier (SEP-2663), under ``capabilities.extensions``."""

_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"


def declares_extension(params: dict[str, Any], extension: str) -> bool:
    """Whether a 2026-07-28 request's ``_meta`` client capabilities declare ``extension``
    (MCP 2026-07-28 basic, the per-request ``_meta`` envelope)."""
    meta = params.get("_meta")
    capabilities = meta.get(_CLIENT_CAPABILITIES) if isinstance(meta, dict) else None
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    return isinstance(extensions, dict) and isinstance(extensions.get(extension), dict)


class ContinuationStage:
    """Check that a retry's ``requestState`` or a task request's ``taskId`` was issued to the caller.

    Runs after classify. Sets ``notes["continues"]`` (the first call's decision id) and
    ``notes["continues_arguments"]`` (that call's arguments, for the approve stage); for a task
    request also the Cedar action, target and resource of the task's call, and
    ``notes["decide_arguments"]``, the arguments the authorize stage decides on.
    Raises ``MissingCapability`` (-32021), ``HeaderMismatch`` (-32020, ``Mcp-Name`` is not the
    ``taskId``), ``UnknownContinuation`` (-32602) or ``TransportError`` (-32602, a malformed
    ``taskId`` / ``requestState``).
    """

    name = "continuation"

    def __init__(self, store: ContinuationStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def run(self, exchange: Exchange) -> None:
        """Link the request to the call it continues, or refuse it (see the class docstring)."""
        if exchange.kind != "request":
            return
        method = exchange.method or ""
        params = exchange.params
        if method in TASK_METHODS:
            await self._task_request(exchange, method, params)
        elif method in INPUT_REQUIRED_METHODS and "requestState" in params:
            state = string_param(params, "requestState", method)
            if is_bastion_state(state):  # Bastion's own (a confirmation): the approve stage checks it
                exchange.notes["approval_state"] = state
                return
            continuation = await self._find(exchange, "state", state, "requestState")
            if continuation.method != method or continuation.target != exchange.target:
                raise UnknownContinuation(
                    "Invalid params: this requestState was issued for another request; "
                    "retry the original request unchanged or start it again"
                )
            exchange.notes["continues"] = continuation.origin
            exchange.notes["continues_arguments"] = continuation.arguments  # an approval covers the same arguments

    async def _task_request(self, exchange: Exchange, method: str, params: dict[str, Any]) -> None:
        if not declares_extension(params, TASKS_EXTENSION):
            raise MissingCapability(
                f"Missing required client capability: {method} needs the {TASKS_EXTENSION} extension",
                data={"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
            )
        task_id = string_param(params, "taskId", method)
        named = exchange.http.headers.get("mcp-name")
        if named is not None and decode_header_value(named.strip()) != task_id:
            # The tasks extension mirrors taskId in Mcp-Name (SEP-2663, routing headers): a router
            # in front must not see another task than the one Bastion decides on.
            raise HeaderMismatch("Mcp-Name header does not match the request body's taskId")
        continuation = await self._find(exchange, "task", task_id, "taskId")
        route = exchange.route.name
        tool = continuation.target or ""
        exchange.action, exchange.target = "tools/call", tool
        ref = exchange.route.catalog_for(exchange.principal).ref(route, tool)
        exchange.resource = ref or exchange.route.inventory.unlisted(tool)
        exchange.notes["continues"] = continuation.origin
        exchange.notes["decide_arguments"] = continuation.arguments

    async def _find(self, exchange: Exchange, kind: ContinuationKind, value: str, what: str) -> Continuation:
        principal = exchange.principal
        found = None
        if principal is not None:
            try:
                found = await self._store.find(principal.key, exchange.route.name, kind, value, now=self._clock())
            except Exception as exc:
                logger.warning("the continuation store failed: %r", exc)
                raise ContinuationsUnavailable(f"Refused: the {what} cannot be checked now; try again later") from exc
        if found is None:
            raise UnknownContinuation(
                f"Invalid params: unknown {what}: it was not issued to you on this route, or it expired"
            )
        return found


class ContinuationFilter:
    """Record the ``requestState`` and task ids the upstream issues in answers to the caller's requests.

    A message filter that never drops: it returns every message unchanged. Only the answer to
    the exchange's own request is recorded (an answer replayed on another stream has no
    decision of this exchange to link to; its continuation is then refused, never let through).
    """

    name = "continuation"

    def __init__(self, store: ContinuationStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def apply(
        self, exchange: Exchange, message: dict[str, Any], answered: SentRequest | None
    ) -> dict[str, Any] | None:
        """Return ``message``; record the continuation its result issues, if any."""
        result = message.get("result")
        principal = exchange.principal
        if not isinstance(result, dict) or answered is None or principal is None or not answers_own(exchange, answered):
            return message
        result_type = result.get("resultType")
        if result_type == "input_required" and answered.method in INPUT_REQUIRED_METHODS:
            self._flag(exchange, "input_required")
            state = result.get("requestState")
            if isinstance(state, str) and state:
                await self._remember(exchange, principal.key, answered, "state", state, DEFAULT_STATE_TTL_S)
        elif result_type == "task" and answered.method == "tools/call":
            self._flag(exchange, "task")
            task_id = result.get("taskId")
            if isinstance(task_id, str) and task_id:
                ttl_ms = result.get("ttlMs")
                ttl = MAX_TASK_TTL_S
                if isinstance(ttl_ms, (int, float)) and not isinstance(ttl_ms, bool) and ttl_ms >= 0:
                    ttl = min(ttl_ms / 1000, MAX_TASK_TTL_S)
                await self._remember(exchange, principal.key, answered, "task", task_id, ttl)
        return message

    async def _remember(
        self, exchange: Exchange, owner: str, answered: SentRequest, kind: ContinuationKind, value: str, ttl_s: float
    ) -> None:
        arguments = exchange.notes.get("decide_arguments", exchange.params.get("arguments"))
        continuation = Continuation(
            origin=exchange.notes.get("continues") or exchange.decision_id,
            method=answered.method,
            target=answered.target,
            arguments=arguments if isinstance(arguments, dict) else {},
            expires=self._clock() + ttl_s,
        )
        await self._store.remember(owner, exchange.route.name, kind, value, continuation)

    @staticmethod
    def _flag(exchange: Exchange, flag: str) -> None:
        flags: list[str] = exchange.notes.setdefault("flags", [])
        if flag not in flags:
            flags.append(flag)

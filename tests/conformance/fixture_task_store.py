"""Tasks of the SEP-2663 tasks extension (revision 2026-07-28) for the conformance fixture: one
task's state, the in-memory store of tasks, and the link from a tool body to the task it runs in.

* ``Task``: status and timestamps; the tool's outcome (its ``tools/call`` result inlined in the
  wire version's shape, or an error); ``inputRequests`` raised inside the task (``Task.elicit``)
  and answered by ``tasks/update`` (``Task.answer``); cancellation of its work.
* ``TaskStore``: tasks by id, in memory, each dropped (its work cancelled) ``ttlMs`` after creation.
* ``CURRENT_TASK`` / ``task_body`` / ``running_task``: the task being created by the current tool
  call, set in the task's own asyncio context by the extension (``fixture_tasks.py``); entering a
  wrapped tool body starts the task, and the body reaches it with ``running_task()``.

A task id is 128 random bits and the only handle on a task: whoever holds it can read, answer or
cancel the task; nobody else can find it (there is no ``tasks/list``).

By hand, because the SDK (``mcp`` 2.3.0) has no support for tasks in this revision. From the SDK:
``render_elicitation_schema`` and the ``ElicitationResult`` types (an answer validated as
``elicit_with_validation`` does) and ``serialize_server_result`` (the inlined tool result).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

from fixture_task_wire import CreateTaskResult, DetailedTask, TaskStatus
from mcp.server.context import HandlerResult
from mcp.server.elicitation import (
    AcceptedElicitation,
    CancelledElicitation,
    DeclinedElicitation,
    ElicitationResult,
    render_elicitation_schema,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    ErrorData,
)
from mcp_types import methods as wire_methods
from pydantic import BaseModel, ValidationError

__all__ = ["CURRENT_TASK", "TERMINAL", "Task", "TaskStore", "running_task", "task_body"]

logger = logging.getLogger("conformance-fixture.tasks")

TERMINAL: frozenset[TaskStatus] = frozenset({"completed", "failed", "cancelled"})

SchemaT = TypeVar("SchemaT", bound=BaseModel)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Task:
    """One task: its status, the input it waits for, and its outcome.

    Created by the ``tools/call`` interceptor and started (put in the store, announced to the
    client) when the tool body begins. Tool bodies reach their task with ``running_task()``.
    """

    def __init__(self, *, ttl_ms: int, poll_interval_ms: int, protocol_version: str) -> None:
        self.task_id = secrets.token_urlsafe(16)
        self.ttl_ms = ttl_ms
        self.poll_interval_ms = poll_interval_ms
        self.protocol_version = protocol_version
        self.status: TaskStatus = "working"
        self.status_message: str | None = None
        self.created_at = self.last_updated_at = _now()
        self.expires_at = time.monotonic() + ttl_ms / 1000
        self.started = False
        self.work: asyncio.Task[None] | None = None
        self._result: dict[str, Any] | None = None
        self._error: ErrorData | None = None
        self._keys = itertools.count(1)
        self._inputs: dict[str, tuple[ElicitRequest, asyncio.Future[ElicitResult]]] = {}

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def begin(self) -> None:
        """The tool body started: the task exists from now on (``createdAt``, the TTL's start)."""
        self.started = True
        self.created_at = self.last_updated_at = _now()
        self.expires_at = time.monotonic() + self.ttl_ms / 1000

    def _set(self, status: TaskStatus, message: str | None = None) -> None:
        self.status, self.status_message, self.last_updated_at = status, message, _now()

    def _fields(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "status": self.status,
            "status_message": self.status_message,
            "created_at": self.created_at,
            "last_updated_at": self.last_updated_at,
            "ttl_ms": self.ttl_ms,
            "poll_interval_ms": self.poll_interval_ms,
        }

    def created(self) -> CreateTaskResult:
        return CreateTaskResult(**self._fields())

    def detailed(self) -> DetailedTask:
        """The ``DetailedTask`` for the current status (no ``requestState`` in any status)."""
        pending = {key: request for key, (request, _) in self._inputs.items()}
        return DetailedTask(
            **self._fields(),
            input_requests=pending if self.status == "input_required" else None,
            result=self._result if self.status == "completed" else None,
            error=self._error if self.status == "failed" else None,
        )

    # -- outcome
    def complete(self, result: HandlerResult) -> None:
        """Inline the tool's result, shaped for the wire version of the call that created the task."""
        if self.terminal:
            return
        if isinstance(result, BaseModel):
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        else:
            dumped = dict(result or {})
        try:
            self._result = wire_methods.serialize_server_result("tools/call", self.protocol_version, dumped)
        except (KeyError, ValueError):  # pydantic's ValidationError is a ValueError
            logger.exception("task %s: the tool returned no valid tools/call result", self.task_id)
            self.fail(ErrorData(code=INTERNAL_ERROR, message="The tool returned an invalid result"))
            return
        self._set("completed")

    def fail(self, error: ErrorData) -> None:
        if not self.terminal:
            self._error = error
            self._set("failed", error.message)

    def cancel(self) -> None:
        """Cancel the work; a terminal task stays as it is (the ack is the same either way)."""
        if self.terminal:
            return
        self._set("cancelled", "Cancelled by tasks/cancel")
        if self.work is not None:
            self.work.cancel()

    # -- input inside a task
    async def elicit(self, message: str, schema: type[SchemaT]) -> ElicitationResult[SchemaT]:
        """Ask the client through ``inputRequests`` and wait for the ``tasks/update`` that answers.

        Validated like the SDK's ``elicit_with_validation``; an accepted answer that does not fit
        ``schema`` is a tool error.
        """
        key = f"input-{next(self._keys)}"
        request = ElicitRequest(
            params=ElicitRequestFormParams(message=message, requested_schema=render_elicitation_schema(schema))
        )
        answer: asyncio.Future[ElicitResult] = asyncio.get_running_loop().create_future()
        self._inputs[key] = (request, answer)
        self._set("input_required", message)
        try:
            result = await answer
        finally:
            self._inputs.pop(key, None)
        if result.action == "decline":
            return DeclinedElicitation()
        if result.action == "cancel":
            return CancelledElicitation()
        try:
            return AcceptedElicitation(data=schema.model_validate(result.content or {}))
        except ValidationError as exc:
            raise ToolError(f"The answer to {key!r} does not match the requested schema") from exc

    def answer(self, responses: Mapping[str, Any]) -> None:
        """Deliver ``tasks/update`` responses; keys that are not outstanding are ignored.

        Answered keys leave ``inputRequests`` before this returns, so the next ``tasks/get`` shows
        only what is still pending; the task goes back to ``working`` once nothing is.

        Raises:
            MCPError: -32602 if a response to an outstanding key is not an elicitation result
                (nothing is delivered then).
        """
        if self.terminal:
            return
        parsed: dict[str, ElicitResult] = {}
        for key, raw in responses.items():
            if key in self._inputs:
                try:
                    parsed[key] = ElicitResult.model_validate(raw)
                except ValidationError:
                    raise MCPError(INVALID_PARAMS, f"inputResponses[{key!r}] is not an elicitation result") from None
        for key, result in parsed.items():
            _, future = self._inputs.pop(key)
            if not future.done():
                future.set_result(result)
        if parsed and not self._inputs:
            self._set("working")


class TaskStore:
    """Tasks by id, in memory; a task is dropped (its work cancelled) ``ttlMs`` after creation."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def add(self, task: Task) -> None:
        self._purge()
        self._tasks[task.task_id] = task

    def get(self, task_id: str) -> Task | None:
        self._purge()
        return self._tasks.get(task_id)

    def _purge(self) -> None:
        now = time.monotonic()
        for task_id, task in list(self._tasks.items()):
            if now >= task.expires_at:
                del self._tasks[task_id]
                if task.work is not None and not task.work.done():
                    task.work.cancel()


CURRENT_TASK: ContextVar[tuple[Task, Callable[[], None]] | None] = ContextVar("fixture_tasks_current", default=None)
"""The task being created by the current tool call and the function that starts it; set by the
extension in the task's own asyncio context."""


def running_task() -> Task:
    """The task the calling tool body runs in.

    Raises:
        ToolError: If the body runs outside a task (a plain synchronous call).
    """
    current = CURRENT_TASK.get()
    if current is None or not current[0].started:
        raise ToolError("This tool asks for input inside a task; call it with the tasks extension declared")
    return current[0]


def task_body(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a tool body so that entering it starts its task (the interceptor then answers
    ``CreateTaskResult``). Outside a task the body just runs."""

    @functools.wraps(fn)
    async def body(*args: Any, **kwargs: Any) -> Any:
        current = CURRENT_TASK.get()
        if current is not None:
            current[1]()
        return await fn(*args, **kwargs)

    return body

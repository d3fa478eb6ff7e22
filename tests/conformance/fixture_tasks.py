"""SEP-2663 tasks extension (``io.modelcontextprotocol/tasks``, revision 2026-07-28) for the conformance
fixture: the tools and methods the ``tasks-*`` scenarios of the conformance suite (0.2.0) call.

A server that sees the extension in a request's ``_meta`` client capabilities may answer a
``tools/call`` with a ``CreateTaskResult`` (``resultType: "task"``, flat ``Task`` fields, no nested
``task``); the client then polls ``tasks/get`` (the result or error is inlined once terminal),
answers ``inputRequests`` with ``tasks/update`` and stops the work with ``tasks/cancel``. Both acks
are empty ``{resultType: "complete"}`` results. ``tasks/result`` and ``tasks/list`` do not exist in
this revision: nothing registers them, so the SDK answers -32601.

This module holds the extension: its tools (``_TOOLS``: each one's body and whether it runs as a
task), ``tasks/get|update|cancel`` and the ``tools/call`` interceptor. The wire models are in
``fixture_task_wire.py``; ``Task`` and ``TaskStore`` in ``fixture_task_store.py``.

From the official SDK (``mcp`` 2.3.0):

* ``Extension`` with ``ToolBinding`` / ``MethodBinding``: registration, the advertisement under
  ``capabilities.extensions``, the ``tools/call`` interceptor, ``tasks/*`` served on 2026-07-28 only;
* ``require_client_extension``: -32021 with ``requiredCapabilities.extensions`` when a request did
  not declare the extension (``tasks/*``; a tool that needs a task);
* ``Resolve`` / ``Elicit``: the multi round-trip rounds of ``test_tool_with_task`` before its task
  exists (the ``RequestStateBoundary`` seals their ``requestState``);
* ``handler_exception_to_error_data``, ``decode_header_value``.

By hand, because the SDK has no support for tasks in this revision:

* running a tool call past its ``tools/call`` exchange. The task is minted when the tool body
  starts, so argument errors and multi round-trip rounds are still answered synchronously (SEP-2663:
  MRTR exchanges SHOULD be resolved before the ``CreateTaskResult``);
* ``Mcp-Name`` must equal ``params.taskId`` on ``tasks/*`` (SEP-2663, Streamable HTTP routing
  headers): the SDK checks ``Mcp-Name`` only for ``tools/call``, ``prompts/get`` and ``resources/read``.

Usage: ``MCPServer(..., extensions=[tasks_extension()])`` in the fixture's ``build_server()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal

from fixture_task_store import CURRENT_TASK, Task, TaskStore, running_task, task_body
from fixture_task_wire import Ack, DetailedTask, TaskRequestParams, UpdateTaskRequestParams
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import Elicit, Extension, MethodBinding, Resolve, ToolBinding, require_client_extension
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp_types import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    CallToolRequestParams,
    ErrorData,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

__all__ = ["EXTENSION_ID", "TasksExtension", "tasks_extension"]

EXTENSION_ID = "io.modelcontextprotocol/tasks"

logger = logging.getLogger("conformance-fixture.tasks")

TaskSupport = Literal["optional", "required"]
"""``optional``: a task when the request declares the extension, else a plain result.
``required``: -32021 when the request does not declare it."""


# ------------------------------------------------------------------ tools
class DeleteConfirmation(BaseModel):
    """Confirm the operation."""

    confirm: bool


class PersonName(BaseModel):
    """Your name."""

    name: str


async def greet(name: str) -> str:
    """Sync-only: returns 'Hello, {name}!'."""
    return f"Hello, {name}!"


async def slow_compute(seconds: float = 1.0, label: str = "") -> str:
    """Sleeps `seconds`, then returns; runs as a task when the request declares the tasks extension."""
    await asyncio.sleep(seconds)
    return f"slow_compute {label!r} finished after {seconds:g}s"


async def failing_job() -> str:
    """Task-only: ends with a tool execution error (isError) after about a second."""
    await asyncio.sleep(1.0)
    raise ToolError("failing_job always fails: a tool execution error (isError), not a protocol error")


async def protocol_error_job() -> str:
    """Fails with a JSON-RPC internal error (a failed task when run as one)."""
    await asyncio.sleep(0.2)
    raise MCPError(INTERNAL_ERROR, "protocol_error_job: simulated internal failure")


async def confirm_delete(filename: str) -> str:
    """Task-only: asks to confirm the deletion (inputRequests), then completes."""
    outcome = await running_task().elicit(f"Delete {filename}?", DeleteConfirmation)
    if isinstance(outcome, AcceptedElicitation) and outcome.data.confirm:
        return f"Deleted {filename}"
    return f"Kept {filename} ({outcome.action})"


async def multi_input() -> str:
    """Task-only: asks two questions at once; they can be answered one at a time."""
    task = running_task()
    name, confirmation = await asyncio.gather(
        task.elicit("What is your name?", PersonName), task.elicit("Proceed?", DeleteConfirmation)
    )
    return f"multi_input: name={name.action}, confirmation={confirmation.action}"


def ask_user_name() -> Elicit[PersonName]:
    """Multi round-trip question of ``test_tool_with_task`` (answered before its task exists)."""
    return Elicit("What is your name?", PersonName)


async def tool_with_task(user: Annotated[PersonName, Resolve(ask_user_name)]) -> str:
    """Task-only: asks the user's name over multi round-trip, then continues as a task."""
    await asyncio.sleep(0.5)
    return f"Hello, {user.name}! (name gathered over multi round-trip before the task was created)"


# Tool name -> (body, task support; None for a plain tool). Descriptions are the docstrings.
_TOOLS: dict[str, tuple[Callable[..., Awaitable[Any]], TaskSupport | None]] = {
    "greet": (greet, None),
    "slow_compute": (slow_compute, "optional"),
    "failing_job": (failing_job, "required"),
    "protocol_error_job": (protocol_error_job, "optional"),
    "confirm_delete": (confirm_delete, "required"),
    "multi_input": (multi_input, "required"),
    "test_tool_with_task": (tool_with_task, "required"),
}


# ------------------------------------------------------------------ the extension
class TasksExtension(Extension):
    """SEP-2663 on an ``MCPServer``: the fixture's tools, ``tasks/get|update|cancel``, and the
    ``tools/call`` interceptor that turns a call to a task-supporting tool into a task."""

    identifier = EXTENSION_ID

    def __init__(self, *, ttl_ms: int = 600_000, poll_interval_ms: int = 500) -> None:
        if ttl_ms <= 0 or poll_interval_ms <= 0:
            raise ValueError("ttl_ms and poll_interval_ms must be positive integers (milliseconds)")
        self._ttl_ms = ttl_ms
        self._poll_interval_ms = poll_interval_ms
        self._store = TaskStore()
        self._support = {name: support for name, (_, support) in _TOOLS.items() if support is not None}

    def tools(self) -> Sequence[ToolBinding]:
        return [
            ToolBinding(task_body(fn) if support else fn, kwargs={"name": name})
            for name, (fn, support) in _TOOLS.items()
        ]

    def methods(self) -> Sequence[MethodBinding]:
        modern = frozenset(MODERN_PROTOCOL_VERSIONS)
        return [
            MethodBinding("tasks/get", TaskRequestParams, self._get, modern),
            MethodBinding("tasks/update", UpdateTaskRequestParams, self._update, modern),
            MethodBinding("tasks/cancel", TaskRequestParams, self._cancel, modern),
        ]

    # -- tasks/*
    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskRequestParams) -> DetailedTask:
        return self._task_for(ctx, params.task_id).detailed()

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskRequestParams) -> Ack:
        self._task_for(ctx, params.task_id).answer(params.input_responses)
        return Ack()

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskRequestParams) -> Ack:
        self._task_for(ctx, params.task_id).cancel()
        return Ack()

    def _task_for(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> Task:
        """Routing header, then the extension in this request's capabilities, then the id.

        Raises:
            MCPError: -32020 if ``Mcp-Name`` is missing or is not ``task_id`` (HTTP only); -32021 if
                the request does not declare the extension; -32602 if no task has that id.
        """
        headers = getattr(ctx.request, "headers", None)
        if headers is not None and decode_header_value(headers.get(MCP_NAME_HEADER)) != task_id:
            raise MCPError(HEADER_MISMATCH, f"{MCP_NAME_HEADER} header does not match params.taskId")
        require_client_extension(ctx, EXTENSION_ID)
        task = self._store.get(task_id)
        if task is None:
            raise MCPError(INVALID_PARAMS, "Failed to retrieve task: Task not found")
        return task

    # -- tools/call
    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        support = self._support.get(params.name)
        if support is None:
            return await call_next(ctx)
        if not _declares_tasks(ctx):
            if support == "required":
                require_client_extension(ctx, EXTENSION_ID)
                raise MCPError(INVALID_REQUEST, f"Tool {params.name!r} runs as a task: needs protocol 2026-07-28")
            return await call_next(ctx)
        return await self._call_as_task(ctx, call_next)

    async def _call_as_task(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Run the call in its own asyncio task and answer as soon as the tool body starts
        (``CreateTaskResult`` with the task's seed state, the task already in the store) or the
        call ends before that (its own answer: an ``InputRequiredResult`` round, an argument
        error, ...).

        The work must outlive this ``tools/call`` exchange and the SDK offers no server-lifetime
        task group to an extension, hence a plain ``asyncio`` task that ``tasks/cancel`` cancels.
        """
        task = Task(ttl_ms=self._ttl_ms, poll_interval_ms=self._poll_interval_ms, protocol_version=ctx.protocol_version)
        # The answer to this tools/call: set once, by whichever comes first.
        handoff: asyncio.Future[HandlerResult] = asyncio.get_running_loop().create_future()

        def start() -> None:
            if not task.started:
                task.begin()
                self._store.add(task)
                if not handoff.done():
                    handoff.set_result(task.created())

        task.work = asyncio.create_task(self._drive(task, start, handoff, ctx, call_next))
        try:
            return await handoff
        except asyncio.CancelledError:
            if not task.started:
                task.work.cancel()
            raise

    @staticmethod
    async def _drive(
        task: Task,
        start: Callable[[], None],
        handoff: asyncio.Future[HandlerResult],
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> None:
        CURRENT_TASK.set((task, start))
        try:
            result = await call_next(ctx)
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception as exc:  # recorded: the task's error, or the call's own answer
            if task.started:
                error = handler_exception_to_error_data(exc) or ErrorData(code=INTERNAL_ERROR, message="Internal error")
                task.fail(error)
                if not isinstance(exc, MCPError):
                    logger.exception("task %s crashed", task.task_id)
            elif not handoff.done():
                handoff.set_exception(exc)
            return
        if task.started:
            task.complete(result)
        elif not handoff.done():
            handoff.set_result(result)


def _declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """True when this request may get a task: 2026-07-28 wire and the extension in its capabilities."""
    capabilities = ctx.session.client_capabilities
    extensions = capabilities.extensions if capabilities is not None else None
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and extensions is not None and EXTENSION_ID in extensions


def tasks_extension(*, ttl_ms: int = 600_000, poll_interval_ms: int = 500) -> TasksExtension:
    """The tasks extension for ``MCPServer(extensions=[...])``: tasks kept ``ttl_ms`` after creation,
    clients told to poll every ``poll_interval_ms``.

    Raises:
        ValueError: If either value is not positive.
    """
    return TasksExtension(ttl_ms=ttl_ms, poll_interval_ms=poll_interval_ms)

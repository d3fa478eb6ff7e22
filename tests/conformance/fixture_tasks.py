"""SEP-2663 tasks extension (``io.modelcontextprotocol/tasks``, revision 2026-07-28) for the conformance
fixture: the tools and methods the ``tasks-*`` scenarios of the conformance suite (0.2.0) call.

A server that sees the extension in a request's ``_meta`` client capabilities may answer a
``tools/call`` with a ``CreateTaskResult`` (``resultType: "task"``, flat ``Task`` fields, no nested
``task``); the client then polls ``tasks/get`` (the result or error is inlined once terminal),
answers ``inputRequests`` with ``tasks/update`` and stops the work with ``tasks/cancel``. Both acks
are empty ``{resultType: "complete"}`` results. ``tasks/result`` and ``tasks/list`` do not exist in
this revision: nothing registers them, so the SDK answers -32601.

From the official SDK (``mcp`` 2.3.0):

* ``Extension`` with ``ToolBinding`` / ``MethodBinding``: registration, the advertisement under
  ``capabilities.extensions``, the ``tools/call`` interceptor, ``tasks/*`` served on 2026-07-28 only;
* ``require_client_extension``: -32021 with ``requiredCapabilities.extensions`` when a request did
  not declare the extension (``tasks/*``; a tool that needs a task);
* ``Resolve`` / ``Elicit``: the multi round-trip rounds of ``test_tool_with_task`` before its task
  exists (the ``RequestStateBoundary`` seals their ``requestState``);
* ``render_elicitation_schema`` and the ``ElicitationResult`` types, ``serialize_server_result``
  (the inlined tool result in the wire version's shape), ``handler_exception_to_error_data``,
  ``decode_header_value``.

By hand, because the SDK has no support for tasks in this revision (its ``Task`` types are the
2025-11-25 ones, with ``ttl``, ``pollInterval`` and a nested ``task``):

* the wire models (``CreateTaskResult``, ``DetailedTask``, the params of ``tasks/*``);
* ``TaskStore`` (in memory, each task dropped ``ttlMs`` after creation) and ``Task``: status,
  timestamps, ``inputRequests`` raised inside a task and answered by ``tasks/update``;
* running a tool call past its ``tools/call`` exchange. The task is minted when the tool body
  starts, so argument errors and multi round-trip rounds are still answered synchronously (SEP-2663:
  MRTR exchanges SHOULD be resolved before the ``CreateTaskResult``);
* ``Mcp-Name`` must equal ``params.taskId`` on ``tasks/*`` (SEP-2663, Streamable HTTP routing
  headers): the SDK checks ``Mcp-Name`` only for ``tools/call``, ``prompts/get`` and ``resources/read``.

A task id is 128 random bits and the only handle on a task: whoever holds it can read, answer or
cancel the task; nobody else can find it (there is no ``tasks/list``).

Usage: ``MCPServer(..., extensions=[tasks_extension()])`` in the fixture's ``build_server()``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.elicitation import (
    AcceptedElicitation,
    CancelledElicitation,
    DeclinedElicitation,
    ElicitationResult,
    render_elicitation_schema,
)
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
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    ErrorData,
    InputRequests,
    RequestParams,
    Result,
)
from mcp_types import methods as wire_methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

__all__ = ["EXTENSION_ID", "TasksExtension", "tasks_extension"]

EXTENSION_ID = "io.modelcontextprotocol/tasks"

logger = logging.getLogger("conformance-fixture.tasks")

TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
TaskSupport = Literal["optional", "required"]
"""``optional``: a task when the request declares the extension, else a plain result.
``required``: -32021 when the request does not declare it."""

TERMINAL: frozenset[TaskStatus] = frozenset({"completed", "failed", "cancelled"})

SchemaT = TypeVar("SchemaT", bound=BaseModel)


# ------------------------------------------------------------------ wire models (by hand)
class TaskRequestParams(RequestParams):
    """Params of ``tasks/get`` and ``tasks/cancel``: ``{taskId}``."""

    task_id: str


class UpdateTaskRequestParams(TaskRequestParams):
    """Params of ``tasks/update``: ``{taskId, inputResponses}``.

    ``inputResponses`` stays untyped here: entries for keys that are not outstanding are ignored
    (SEP-2663), whatever their shape; outstanding ones are validated by ``Task.answer``.
    """

    input_responses: dict[str, Any]


class TaskFields(Result):
    """The ``Task`` fields every task-shaped result carries at its top level."""

    task_id: str
    status: TaskStatus
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int
    poll_interval_ms: int


class CreateTaskResult(TaskFields):
    """``tools/call`` answered with a task handle (``Result & Task``)."""

    result_type: Literal["task"] = "task"


class DetailedTask(TaskFields):
    """``tasks/get`` result: the task plus what its status carries (inputs, result or error)."""

    result_type: Literal["complete"] = "complete"
    input_requests: InputRequests | None = None
    result: dict[str, Any] | None = None
    error: ErrorData | None = None


class Ack(Result):
    """Empty acknowledgement of ``tasks/update`` and ``tasks/cancel``."""

    result_type: Literal["complete"] = "complete"


# ------------------------------------------------------------------ tasks and their store
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


# The task being created by the current tool call; set in the task's own asyncio context.
_CURRENT: ContextVar[tuple[Task, Callable[[], None]] | None] = ContextVar("fixture_tasks_current", default=None)


def running_task() -> Task:
    """The task the calling tool body runs in.

    Raises:
        ToolError: If the body runs outside a task (a plain synchronous call).
    """
    current = _CURRENT.get()
    if current is None or not current[0].started:
        raise ToolError("This tool asks for input inside a task; call it with the tasks extension declared")
    return current[0]


def _task_body(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a tool body so that entering it starts its task (the interceptor then answers
    ``CreateTaskResult``). Outside a task the body just runs."""

    @functools.wraps(fn)
    async def body(*args: Any, **kwargs: Any) -> Any:
        current = _CURRENT.get()
        if current is not None:
            current[1]()
        return await fn(*args, **kwargs)

    return body


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
            ToolBinding(_task_body(fn) if support else fn, kwargs={"name": name})
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
        _CURRENT.set((task, start))
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

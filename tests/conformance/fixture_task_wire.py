"""Wire models of the SEP-2663 tasks extension (``io.modelcontextprotocol/tasks``, revision
2026-07-28) for the conformance fixture: the params of ``tasks/*`` and the task-shaped results.

A ``tools/call`` that becomes a task is answered with a ``CreateTaskResult`` (``resultType:
"task"``, flat ``Task`` fields, no nested ``task``); ``tasks/get`` answers a ``DetailedTask`` (the
result or error inlined once terminal, the outstanding ``inputRequests`` while ``input_required``);
``tasks/update`` and ``tasks/cancel`` answer an empty ``Ack`` (``{resultType: "complete"}``).

By hand, because the SDK (``mcp`` 2.3.0) has no support for tasks in this revision: its ``Task``
types are the 2025-11-25 ones, with ``ttl``, ``pollInterval`` and a nested ``task``. The models
build on the SDK's ``RequestParams`` and ``Result`` (camelCase aliases, ``_meta``) and reuse its
``InputRequests`` and ``ErrorData``.
"""

from __future__ import annotations

from typing import Any, Literal

from mcp_types import ErrorData, InputRequests, RequestParams, Result

__all__ = [
    "Ack",
    "CreateTaskResult",
    "DetailedTask",
    "TaskFields",
    "TaskRequestParams",
    "TaskStatus",
    "UpdateTaskRequestParams",
]

TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]


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

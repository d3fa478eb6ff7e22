"""The volume filter: tool results far above their tool's usual volume are flagged or withheld.

Issue 14, "Result volume". For each ``tools/call`` result that answers a request the client
sent (not a JSON-RPC error, not ``isError: true``, not an ``input_required`` or task result),
the filter measures it (``bastion.volume.measure``) and checks it against the (route, tool)
baseline (``bastion.volume.VolumeBaselines``), then adds it to that baseline (an anomalous one
only where it is relayed, ``flag``: were withheld results learnt, an agent repeating a bulk read
would teach Bastion that it is usual). An anomalous
result gets the flag ``volume_anomaly`` in the outcome record's ``result.flags`` and its
measures in ``result.volume`` (with the baseline, the measures exceeded and the SHA-256 of
the result's compact JSON: the upstream's answer is recorded by digest, never its content).
Only anomalous results are recorded so: the usual ones would add a dict and a digest of the
whole result to every call for nothing (``result.response_bytes`` already gives every
call's size).

What then happens is the route's policy for results, ``result_volume`` (a tool's own
``tools.<name>.result_volume`` wins):

- ``flag`` (the default): the result is relayed;
- ``withhold``: the client gets a tool execution error instead (MCP 2025-11-25 server/tools,
  "Error Handling": ``isError: true``, same JSON-RPC id) saying why, and the outcome records
  ``result_withheld``; the upstream's content never reaches the client;
- ``off``: the tool's results are not measured.

The same applies to an answer replayed on a resumed GET stream (withheld again if it is
anomalous), but a replay is not learnt twice. JSON replies and SSE streams alike: the runner
hands every message to the filters.
"""

from __future__ import annotations

import hashlib
from typing import Any

from bastion.config.routes import ResultVolumeMode, RouteSettings
from bastion.errors import ResultWithheld
from bastion.pipeline.context import Exchange
from bastion.pipeline.filters import answers_own
from bastion.pipeline.runner import tool_error_result
from bastion.stores.sessions import SentRequest
from bastion.volume import MEASURES, Verdict, VolumeBaselines, measure

__all__ = ["VOLUME_FLAG", "VolumeFilter", "withheld_error", "withheld_message"]

VOLUME_FLAG = "volume_anomaly"
"""The outcome record's flag (``result.flags``) of an anomalous result."""

_NOT_A_TOOL_ANSWER = frozenset({"input_required", "task"})  # 2026-07-28 results that carry no tool output


class VolumeFilter:
    """Measure the route's tool results; flag or withhold the anomalous ones (see the module docstring).

    One per route (``settings``: its ``result_volume`` and its tools' overrides); ``baselines``
    is the gateway's, shared by every route (keyed by route and tool).
    """

    name = "volume"

    def __init__(self, baselines: VolumeBaselines, settings: RouteSettings) -> None:
        self._baselines = baselines
        self._default: ResultVolumeMode = settings.result_volume
        self._modes: dict[str, ResultVolumeMode] = {
            name: tool.result_volume for name, tool in settings.tools.items() if tool.result_volume is not None
        }

    async def apply(
        self, exchange: Exchange, message: dict[str, Any], answered: SentRequest | None
    ) -> dict[str, Any] | None:
        """Return ``message``, or in its place a tool error when it is withheld."""
        if answered is None or answered.method != "tools/call" or answered.target is None:
            return message
        result = message.get("result")
        if type(result) is not dict or result.get("isError") is True or result.get("resultType") in _NOT_A_TOOL_ANSWER:
            return message
        tool = answered.target
        mode = self._modes.get(tool, self._default)
        if mode == "off":
            return message
        measures, encoded = measure(result)
        own = answers_own(exchange, answered)
        verdict = self._baselines.observe(
            exchange.route.name, tool, measures, learn=own, learn_anomalous=mode != "withhold"
        )
        if not verdict.anomalous:
            return message
        withhold = mode == "withhold"
        _flag(exchange)
        exchange.notes["volume"] = _record(verdict, withheld=withhold, digest=hashlib.sha256(encoded).hexdigest())
        if not withhold:
            return message
        error = withheld_error(exchange, tool, verdict)
        if own:
            exchange.error = error  # the outcome's error_code: result_withheld
        return {"jsonrpc": "2.0", "id": message.get("id"), "result": tool_error_result(exchange, error)}


def _flag(exchange: Exchange) -> None:
    flags: list[str] = exchange.notes.setdefault("flags", [])
    if VOLUME_FLAG not in flags:
        flags.append(VOLUME_FLAG)


def _record(verdict: Verdict, *, withheld: bool, digest: str) -> dict[str, Any]:
    """The outcome record's ``result.volume`` (``bastion.audit.record.ResultVolume``)."""
    baseline = verdict.baseline or verdict.measures
    return {
        **verdict.measures._asdict(),
        "baseline": baseline._asdict(),
        "samples": verdict.samples,
        "exceeded": list(verdict.exceeded),
        "anomalous": verdict.anomalous,
        "withheld": withheld,
        "result_sha256": digest,
    }


def withheld_error(exchange: Exchange, tool: str, verdict: Verdict) -> ResultWithheld:
    """The error the client gets in place of an anomalous result: its text for the model and
    ``data`` (``structuredContent.error``) naming the measure, the values and the decision id."""
    name, times = verdict.worst()
    index = MEASURES.index(name)
    value, usual = verdict.measures[index], verdict.baseline[index] if verdict.baseline else 0
    return ResultWithheld(
        withheld_message(tool, name, value, usual, times, exchange.decision_id),
        data={
            "cause": "result_volume",
            "measure": name,
            "value": value,
            "usual": usual,
            "times": round(times, 1) if times != float("inf") else None,
            "decision_id": exchange.decision_id,
        },
    )


_UNITS = {"bytes": "bytes", "blocks": "text blocks", "items": "structured items"}


def withheld_message(tool: str, measure_name: str, value: int, usual: int, times: float, decision_id: str) -> str:
    """The text of a withheld result: why, by how much, and what the caller can do about it."""
    unit = _UNITS[measure_name]
    if times == float("inf"):
        how = f"it carries {value:,} {unit} where this tool's results usually carry none"
    else:
        how = f"its volume is {times:,.0f} times the usual for this tool ({value:,} {unit}; usually {usual:,})"
    return (
        f"Result withheld by Bastion: the result of {tool} was not relayed because {how}. "
        "An unusually large result can be a mistake or data leaving in bulk; only its digest was recorded. "
        "Ask for fewer records, or ask a Bastion administrator to review this call in the audit log "
        f"(decision {decision_id}): if such results are expected, they can set this tool's "
        "result_volume to flag."
    )

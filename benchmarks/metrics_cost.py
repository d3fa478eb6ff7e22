"""CPU per call of the metrics and tracing observers on the ``tools/call`` path (issue 17).

Run: ``.venv/bin/python benchmarks/metrics_cost.py`` (add ``--multiprocess`` to measure with
``PROMETHEUS_MULTIPROC_DIR`` set, as under ``bastion serve --workers N``: values in memory-mapped
files). Runs a POST pipeline with every check slot of ``bastion.pipeline.plan`` filled by a stage that
does nothing but the one that decides, the real audit stage on an in-memory log, a forward stage
that answers at once and no filters: 15 observed steps per call, as a real ``tools/call``. Prints
microseconds of process CPU per call without an observer (the default: the runner calls nothing)
and with ``MetricsObserver``, the median of seven interleaved rounds of 20,000 calls, and the
difference: what metrics add per call. Then the same for ``TracingObserver`` (``bastion.tracing``),
every trace kept and its spans handed to a batch processor whose exporter drops them (what a
collector costs is off this process), and with ``sample_ratio: 0`` (spans made but not recorded).

``--json`` prints the medians instead, one JSON object: microseconds of CPU per call by variant
(``off``, ``idle``, ``on``, ``traced``, ``no stages``, ``unsampled``), the ``mode`` and ``source``
(the ``bastion`` package measured: ``make bench`` runs this with a baseline commit's ``src`` first
on ``PYTHONPATH``, ``benchmarks/observability.py``). ``--calls N`` and ``--rounds N`` change the
20,000 calls per round and the seven rounds.
"""

from __future__ import annotations

import os
import sys
import tempfile

if "--multiprocess" in sys.argv:  # before prometheus_client is imported: it reads this at import
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bastion-metrics-cost-")

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

import bastion
from bastion.config import HttpUpstream, RouteSettings
from bastion.metrics import BastionMetrics, MetricsObserver
from bastion.pipeline.context import Exchange, HttpRequest, JsonReply
from bastion.pipeline.filters import MessageInspector
from bastion.pipeline.observer import NO_OBSERVER, StepObserver
from bastion.pipeline.plan import CHECK_SLOTS
from bastion.pipeline.runner import Pipeline
from bastion.pipeline.stages.audit import AuditStage
from bastion.policy import Decision, ResourceRef
from bastion.principal import Principal
from bastion.tracing import TracingObserver
from bastion.transport.routes import RouteRuntime

CALLS = 20_000
ROUNDS = 7
ALICE = Principal(kind="User", sub="alice", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0)
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {}}})
ROUTE = RouteRuntime(settings=RouteSettings(name="notes", http=HttpUpstream(url="http://up.test/mcp", allow_http=True)),
                     resource_uri="http://gw.test/mcp/notes", metadata_url="")  # fmt: skip
RESOURCE = ResourceRef("Tool", "notes", "search", {"risk": "read"})
DECISION = Decision("allow", ("notes-read",))


class _Policies:
    version = "v1"
    policy_ids = ("notes-read",)


class _Idle:
    """An observer that does nothing: what the runner's calls to an observer cost by themselves."""

    def stage_started(self, exchange: Exchange, stage: str) -> None:
        pass

    def stage_ended(self, exchange: Exchange, stage: str, duration_s: float, error: object) -> None:
        pass


class _Log:
    async def append(self, body: dict[str, Any]) -> None:
        pass

    def append_nowait(self, body: dict[str, Any]) -> None:
        pass


class _Step:
    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, exchange: Exchange) -> None:
        if self.name == "transport":
            exchange.message = json.loads(exchange.http.body)
            exchange.kind = "request"
            exchange.principal = ALICE
        elif self.name == "authorize":
            exchange.resource, exchange.decision = RESOURCE, DECISION
        elif self.name == "forward":
            exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": 1, "result": {"content": []}})


def _pipeline(observer: StepObserver) -> Pipeline:
    audit = AuditStage(_Log(), policy_version="v1")  # type: ignore[arg-type]
    return Pipeline([_Step(name) for name in CHECK_SLOTS], audit=audit, forward=_Step("forward"),
                    inspector=MessageInspector([], on_drop=audit.record_dropped), observer=observer)  # fmt: skip


async def _round(pipeline: Pipeline, calls: int = CALLS) -> float:
    """Microseconds of process CPU per call over ``calls`` calls."""
    request = HttpRequest("POST", "/mcp/notes", {}, (), "127.0.0.1", BODY.encode())
    start = time.process_time()
    for _ in range(calls):
        exchange = Exchange(route=ROUTE, http=request)
        await pipeline.handle(exchange)
        await pipeline.finish(exchange)
    return (time.process_time() - start) / calls * 1e6


class _Drop(SpanExporter):
    """An exporter that drops what it is given: the spans' cost in this process, no collector's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _tracing(ratio: float, *, stages: bool = True) -> TracingObserver:
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(BatchSpanProcessor(_Drop()))
    return TracingObserver(provider.get_tracer("bastion"), stages=stages)


async def medians(calls: int = CALLS, rounds: int = ROUNDS) -> dict[str, float]:
    """Microseconds of process CPU per call by variant: the median of ``rounds`` interleaved rounds of
    ``calls`` calls each, after one round of warm-up."""
    observer = MetricsObserver(BastionMetrics(), _Policies())
    pipelines = {"off": _pipeline(NO_OBSERVER), "idle": _pipeline(_Idle()), "on": _pipeline(observer),
                 "traced": _pipeline(_tracing(1.0)), "no stages": _pipeline(_tracing(1.0, stages=False)),
                 "unsampled": _pipeline(_tracing(0.0))}  # fmt: skip
    measured: dict[str, list[float]] = {name: [] for name in pipelines}
    for pipeline in pipelines.values():
        await _round(pipeline, calls)  # warm up
    for _ in range(rounds):
        for name, pipeline in pipelines.items():
            measured[name].append(await _round(pipeline, calls))
        observer.flush()  # what the scheduled flush does, once a second, in a server
    return {name: statistics.median(values) for name, values in measured.items()}


async def main() -> None:
    """Print the medians and the difference (or, with ``--json``, the medians as JSON)."""
    parser = argparse.ArgumentParser(description="CPU per call of the metrics and tracing observers")
    parser.add_argument("--multiprocess", action="store_true", help="with PROMETHEUS_MULTIPROC_DIR set")
    parser.add_argument("--json", action="store_true", help="print the medians as one JSON object")
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    figures = await medians(args.calls, args.rounds)
    mode = "multiprocess (PROMETHEUS_MULTIPROC_DIR)" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "one process"
    if args.json:
        print(json.dumps({"us_per_call": figures, "mode": mode, "source": str(Path(bastion.__file__).parent)}))
        return
    off, idle, on = (figures[name] for name in ("off", "idle", "on"))
    print(f"metrics, {mode}: off {off:.2f} us/call, on {on:.2f} us/call: added {on - off:.2f} us/call, "
          f"of which {idle - off:.2f} the runner's calls to an observer (15 steps)")  # fmt: skip
    traced, bare, unsampled = (figures[name] for name in ("traced", "no stages", "unsampled"))
    print(f"tracing: off {off:.2f} us/call; every trace kept: {traced:.2f} us/call (added {traced - off:.2f}), "
          f"stage_spans false {bare:.2f} (added {bare - off:.2f}); sample_ratio 0: {unsampled:.2f} us/call "
          f"(added {unsampled - off:.2f})")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())

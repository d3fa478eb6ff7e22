"""CPU per call of behavioural limits (issue 14): two rate limits and one data-flow rule.

Run: ``.venv/bin/python benchmarks/limits_cost.py`` (``make bench`` prints the same rows). Measures,
in microseconds of process CPU per call:

- ``limits_two_rates_us``: ``LimitsStage.run`` with two configured rates (one per principal, one per
  tool) that every call matches, counted in memory, limits never reached;
- ``limits_no_limit_us``: the same stage on a call no limit matches;
- ``limits_flow_us``: what two rates and one data-flow rule ADD to a call, embedded stores: the
  caller's ``session_labels`` read (``SessionActivity.session_labels``), the Cedar decision with the
  data-flow forbid in the policy set minus the decision without it, and the limits stage counting
  the two rates and marking the tool's label (the median of ``ROUNDS`` interleaved rounds: the
  difference of two loops of about 40 µs each is otherwise at the mercy of the machine's drift);
- ``limits_flow_redis_us`` (only when Redis answers on 127.0.0.1:6379): the same with the two
  rates counted in that Redis (``RedisRateCounter``: one Lua script round trip per rate), and
  ``limits_flow_redis_wall_us`` its wall-clock time per call (the round trips' latency).

The stages read only a few fields of the exchange, so it is a stand-in with those.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bastion.config.limits import DataFlowSettings, LimitSettings
from bastion.limits.activity import SessionActivity
from bastion.pipeline.stages.limits import LimitsStage
from bastion.policy import Decision, PolicyEngine, ResourceRef
from bastion.principal import Principal
from bastion.stores.counters import RateCounter
from bastion.stores.memory_activity import MemoryActivityStore
from bastion.stores.memory_counters import MemoryRateCounter
from bastion.stores.redis_counters import RedisRateCounter

CALLS = 50_000
ROUNDS = 10
"""``limits_flow*``: the median over this many interleaved rounds of (with limits) - (without)."""
REDIS_CALLS = 5_000
REDIS_URL = "redis://127.0.0.1:6379/0"

PERMIT = '@id("p") permit (principal, action == Action::"tools/call", resource);\n'
FLOW_RULE = """@id("no-exfiltration") forbid (principal, action == Action::"tools/call", resource is Tool)
when { resource.labels.contains("external_sink")
       && context.session_labels.containsAll(["private_data", "untrusted_content"]) };
"""
RATES = [
    {"name": "per-person", "match": {"route": "echo"}, "rate": "999999999/minute"},
    {"name": "per-tool", "match": {"tool": "echo"}, "rate": "999999999/minute", "per": "tool"},
]


def _engine(folder: Path, text: str, name: str) -> PolicyEngine:
    path = folder / f"{name}.cedar"
    path.write_text(text, encoding="utf-8")
    return PolicyEngine.load([path])


async def _per_call_us(step: Any, calls: int) -> tuple[float, float]:
    """``(CPU µs, wall µs)`` per awaited ``step()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await step()
    return (time.process_time() - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6


async def _flow_us(rates: RateCounter, calls: int) -> tuple[float, float]:
    """CPU and wall µs per call added by two rates and one data-flow rule (see the module docstring)."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        plain, flowing = _engine(folder, PERMIT, "plain"), _engine(folder, PERMIT + FLOW_RULE, "flow")
    activity = SessionActivity(MemoryActivityStore(), caps={}, data_flow=DataFlowSettings(), track_labels=True,
                               session_idle_s=3600)  # fmt: skip
    limits = [LimitSettings.model_validate(rate) for rate in RATES]
    stage = LimitsStage(limits, engine=flowing, rates=rates, quotas=rates, activity=activity)
    who = Principal(kind="User", sub="bench", issuer="https://b", auth_method="bastion_jwt", expires_at=0, idp="x",
                    client_id="agent")  # fmt: skip
    tool = ResourceRef.from_tool("echo", {"name": "echo"}, risk="read", labels=["private_data"])
    exchange: Any = SimpleNamespace(
        decision=Decision("allow", ("p",), {}, ()), principal=who, action="tools/call", target="echo", resource=tool,
        route=SimpleNamespace(name="echo", settings=SimpleNamespace(denials="jsonrpc")), session=None,
    )  # fmt: skip
    context: dict[str, Any] = {"arguments": {"message": "hello"}, "client_id": "agent", "time": int(time.time())}

    async def without() -> None:
        plain.decide(who, "tools/call", tool, context)

    async def with_limits() -> None:
        labels = await activity.session_labels(exchange)
        flowing.decide(who, "tools/call", tool, {**context, "session_labels": sorted(labels)})
        await stage.run(exchange)

    await with_limits()  # warm: the first call creates the keys
    cpu_added, wall_added = [], []
    for _ in range(ROUNDS):  # interleaved, so that a slower stretch of the machine hits both alike
        base_cpu, base_wall = await _per_call_us(without, calls // ROUNDS)
        cpu, wall = await _per_call_us(with_limits, calls // ROUNDS)
        cpu_added.append(cpu - base_cpu)
        wall_added.append(wall - base_wall)
    return statistics.median(cpu_added), statistics.median(wall_added)


async def limits_figures(*, redis_url: str | None = REDIS_URL) -> dict[str, float]:
    """The figures of the module docstring (the Redis ones only when ``redis_url`` answers)."""
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as name:
        engine = _engine(Path(name), PERMIT, "p")
    stage = LimitsStage([LimitSettings.model_validate(rate) for rate in RATES], engine=engine,
                        rates=MemoryRateCounter(), quotas=MemoryRateCounter())  # fmt: skip
    who = Principal(kind="User", sub="bench", issuer="https://b", auth_method="bastion_jwt", expires_at=0, idp="x")
    decision = Decision("allow", ("p",), {}, ())
    for key, route in (("limits_two_rates_us", "echo"), ("limits_no_limit_us", "other")):
        exchange: Any = SimpleNamespace(decision=decision, principal=who, action="tools/call", target=route,
                                        route=SimpleNamespace(name=route))  # fmt: skip
        figures[key] = (await _per_call_us(lambda e=exchange: stage.run(e), CALLS))[0]
    figures["limits_flow_us"] = (await _flow_us(MemoryRateCounter(), CALLS))[0]
    if redis_url is not None:
        counter = RedisRateCounter(redis_url, prefix=f"bastion:bench:{time.time_ns()}:")
        try:
            await counter.start()
        except Exception:  # noqa: BLE001 - no Redis here: its rows are left out
            await counter.close()
            return figures
        try:
            figures["limits_flow_redis_us"], figures["limits_flow_redis_wall_us"] = await _flow_us(counter, REDIS_CALLS)
        finally:
            await counter.close()
    return figures


async def main() -> None:
    """Print the figures three times."""
    for _ in range(3):
        for key, value in (await limits_figures()).items():
            print(f"{key}: {value:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

"""CPU per call of the limits stage with two rate limits that apply, embedded store (issue 14).

Run: ``.venv/bin/python benchmarks/limits_cost.py``. Prints microseconds of process CPU per
``LimitsStage.run`` over 100,000 calls, three times: two configured rates (one per principal, one
per tool) that every call matches, counted by the in-memory ``MemoryRateCounter`` with limits high
enough never to refuse; and the same stage on a call no limit matches. The stage reads only the
decision, principal, action, route name and target, so the exchange is a stand-in with those.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bastion.config.limits import LimitSettings
from bastion.pipeline.stages.limits import LimitsStage
from bastion.policy import Decision, PolicyEngine
from bastion.principal import Principal
from bastion.stores.memory_counters import MemoryRateCounter

CALLS = 100_000


async def main() -> None:
    """Print the figures three times."""
    with tempfile.TemporaryDirectory() as folder:
        policy = Path(folder) / "p.cedar"
        policy.write_text('@id("p") permit (principal, action == Action::"tools/call", resource);', encoding="utf-8")
        engine = PolicyEngine.load([policy])
    limits = [
        LimitSettings(name="per-person", match={"route": "echo"}, rate="999999999/minute"),  # type: ignore[arg-type]
        LimitSettings(name="per-tool", match={"tool": "echo"}, rate="999999999/minute", per="tool"),  # type: ignore[arg-type]
    ]
    stage = LimitsStage(limits, engine=engine, rates=MemoryRateCounter(), quotas=MemoryRateCounter())
    who = Principal(kind="User", sub="bench", issuer="https://b", auth_method="bastion_jwt", expires_at=0, idp="x")
    decision = Decision("allow", ("p",), {}, ())
    limited = SimpleNamespace(decision=decision, principal=who, action="tools/call", route=SimpleNamespace(name="echo"),
                              target="echo")  # fmt: skip
    free = SimpleNamespace(decision=decision, principal=who, action="tools/call", route=SimpleNamespace(name="other"),
                           target="other")  # fmt: skip
    for _ in range(3):
        for label, exchange in (("two limits", limited), ("no limit applies", free)):
            start = time.process_time()
            for _ in range(CALLS):
                await stage.run(exchange)  # type: ignore[arg-type]
            print(f"limits, {label}: {(time.process_time() - start) / CALLS * 1e6:.2f} us/call")


if __name__ == "__main__":
    asyncio.run(main())

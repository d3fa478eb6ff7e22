"""CPU per call of the approve stage for a call whose decision asks for no approval (issue 13).

Run: ``.venv/bin/python benchmarks/approve_cost.py``. Prints microseconds of process CPU per
``ApproveStage.run`` over 200,000 calls, three times. The stage reads only the decision and the
request's notes on this path, so the exchange is a stand-in with those two fields.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bastion.pipeline.stages.approve import ApproveStage
from bastion.policy import Decision

CALLS = 200_000


class _Exchange:
    def __init__(self) -> None:
        self.decision = Decision("allow", ("p",), {}, ())
        self.notes: dict[str, Any] = {}


async def main() -> None:
    """Print the figure three times."""
    stage = ApproveStage(None, states=None, hold_s=60, policy_version="v")  # type: ignore[arg-type]
    exchange: Any = _Exchange()
    for _ in range(3):
        start = time.process_time()
        for _ in range(CALLS):
            await stage.run(exchange)
        print(f"approve, no approval asked: {(time.process_time() - start) / CALLS * 1e6:.2f} us/call")


if __name__ == "__main__":
    asyncio.run(main())

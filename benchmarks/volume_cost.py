"""CPU per call of the volume filter (issue 14, "Result volume").

Run: ``.venv/bin/python benchmarks/volume_cost.py``. Prints microseconds of process CPU per
``VolumeFilter.apply`` over many calls, three times, for a ``tools/call`` result of about 2 KB
(10 rows, as text blocks and ``structuredContent``) and one of about 100 KB (500 rows), each
against a baseline learnt from results like it (the usual path: measured, checked, learnt, not
anomalous); and the same 100 KB result on a ``withhold`` route whose tool usually returns 2 KB
(the anomalous path: digest, record and the tool error in its place; timed as a replayed answer,
which is checked but not learnt, so that the result stays anomalous for every call: learning costs
about 2 us more). The exchange is a real ``Exchange`` on a route; the message is the parsed upstream
answer, as the runner hands it over.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bastion.config import HttpUpstream, RouteSettings
from bastion.config.volume import VolumeSettings
from bastion.pipeline.context import Exchange, HttpRequest
from bastion.pipeline.filters import sent_request
from bastion.pipeline.stages.volume import VolumeFilter
from bastion.stores.sessions import SentRequest
from bastion.transport.routes import RouteRuntime
from bastion.volume import VolumeBaselines, measure


def _result(rows: int) -> dict[str, Any]:
    data = [{"id": n, "name": f"customer-{n:05d}", "email": f"customer-{n:05d}@example.com"} for n in range(rows)]
    return {"content": [{"type": "text", "text": json.dumps(row)} for row in data], "structuredContent": {"rows": data}}


def _exchange(route: RouteRuntime, tool: str) -> Exchange:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
    exchange = Exchange(route=route, http=HttpRequest("POST", "/mcp/db", {}, (), None, b""))
    exchange.message, exchange.kind, exchange.action, exchange.target = message, "request", "tools/call", tool
    return exchange


async def _per_call(
    volume: VolumeFilter, route: RouteRuntime, tool: str, result: dict[str, Any], calls: int, *, replay: bool = False
) -> float:
    """Microseconds of CPU per ``apply`` (the exchange is built outside the timed loop)."""
    exchanges = [_exchange(route, tool) for _ in range(calls)]
    answers = [SentRequest(2, "tools/call", tool) if replay else sent_request(e) for e in exchanges]
    message = {"jsonrpc": "2.0", "id": 1, "result": result}
    start = time.process_time()
    for exchange, answered in zip(exchanges, answers, strict=True):
        await volume.apply(exchange, message, answered)
    return (time.process_time() - start) / calls * 1e6


async def main() -> None:
    """Print the figures three times."""
    small, large = _result(10), _result(500)
    print(f"result sizes: {measure(small)[0].bytes} and {measure(large)[0].bytes} bytes")
    for _ in range(3):
        for mode in ("flag", "withhold"):
            settings = RouteSettings(
                name="db", http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True), result_volume=mode
            )
            route = RouteRuntime(settings=settings, resource_uri="http://gw.test/mcp/db", metadata_url="http://m")
            baselines = VolumeBaselines(VolumeSettings())
            volume = VolumeFilter(baselines, settings)
            await _per_call(volume, route, "small", small, 200)  # learn the baselines
            await _per_call(volume, route, "large", large, 200)
            if mode == "flag":
                usual_small = await _per_call(volume, route, "small", small, 50_000)
                usual_large = await _per_call(volume, route, "large", large, 2_000)
                print(f"volume, usual 2 KB result: {usual_small:.2f} us/call")
                print(f"volume, usual 100 KB result: {usual_large:.2f} us/call")
            else:
                withheld = await _per_call(volume, route, "small", large, 2_000, replay=True)
                print(f"volume, 100 KB result withheld (2 KB usual): {withheld:.2f} us/call")


if __name__ == "__main__":
    asyncio.run(main())

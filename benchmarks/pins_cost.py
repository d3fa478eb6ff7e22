"""CPU of pinning and quarantine on the request path (issue 15).

Run: ``.venv/bin/python benchmarks/pins_cost.py``. Prints, three times each:

- the ``definitions`` stage on a ``tools/call`` of a pinned, served tool (the verdict is cached:
  the hot path), in microseconds of process CPU per call over 100,000 calls;
- the ``scan`` filter on a 100-tool ``tools/list`` result the guard has judged before (every
  verdict cached), in microseconds per list;
- the first judgement of a 100-tool list (pins taken at first sight in the in-memory store, the
  real definition scanner on each tool), in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bastion.catalog.guard import DefinitionGuard
from bastion.catalog.pins_memory import MemoryPinStore
from bastion.config import HttpUpstream, RouteSettings
from bastion.config.definitions import DefinitionSettings
from bastion.pipeline.context import Exchange, HttpRequest
from bastion.pipeline.stages.definitions import DefinitionStage
from bastion.pipeline.stages.scan import DefinitionFilter
from bastion.principal import Principal
from bastion.scan.definitions import scan_definition
from bastion.stores.sessions import SentRequest
from bastion.transport.routes import RouteRuntime

CALLS = 100_000
LISTS = 2_000
TOOLS = [
    {"name": f"tool_{i}", "description": f"Looks up record {i} in the inventory and returns its fields.",
     "inputSchema": {"type": "object", "properties": {"id": {"type": "string", "description": "The record id."}}}}
    for i in range(100)
]  # fmt: skip
ALICE = Principal(kind="User", sub="alice", issuer="https://gw.test", auth_method="bastion_jwt", expires_at=0)


class _Log:
    """Records nothing (the figures are the request path's, not the audit log's)."""

    async def append(self, body: Any) -> None:
        return None


def _route() -> RouteRuntime:
    settings = RouteSettings(name="bench", http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True))
    return RouteRuntime(settings=settings, resource_uri="http://gw.test/mcp/bench", metadata_url="http://gw.test/m")


def _guard() -> DefinitionGuard:
    log: Any = _Log()
    return DefinitionGuard("bench", DefinitionSettings(pin="first_use"), store=MemoryPinStore(), log=log,
                           scanner=scan_definition)  # fmt: skip


def _exchange(route: RouteRuntime, method: str, params: dict[str, Any]) -> Exchange:
    message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    made = Exchange(route=route, http=HttpRequest("POST", "/mcp/bench", {}, (), None, json.dumps(message).encode()))
    made.message, made.kind, made.principal = message, "request", ALICE
    return made


async def pins_figures() -> dict[str, float]:
    """One measurement of each figure of the module docstring: ``scan_first_100_ms``,
    ``scan_cached_100_us`` (per list) and ``definitions_stage_us`` (per call)."""
    listing = SentRequest(1, "tools/list", None, True)
    message = {"jsonrpc": "2.0", "id": 1, "result": {"tools": TOOLS}}
    route, guard = _route(), _guard()
    await guard.load()
    route.catalog_for(ALICE).merge(TOOLS, complete=True)
    scan = DefinitionFilter(guard)
    figures: dict[str, float] = {}
    start = time.process_time()
    await scan.apply(_exchange(route, "tools/list", {}), message, listing)
    figures["scan_first_100_ms"] = (time.process_time() - start) * 1e3
    start = time.process_time()
    for _ in range(LISTS):
        await scan.apply(_exchange(route, "tools/list", {}), message, listing)
    figures["scan_cached_100_us"] = (time.process_time() - start) / LISTS * 1e6
    stage = DefinitionStage(guard)
    call = _exchange(route, "tools/call", {"name": "tool_7", "arguments": {}})
    call.action, call.target = "tools/call", "tool_7"
    start = time.process_time()
    for _ in range(CALLS):
        await stage.run(call)
    figures["definitions_stage_us"] = (time.process_time() - start) / CALLS * 1e6
    return figures


async def main() -> None:
    """Print the figures three times."""
    for _ in range(3):
        found = await pins_figures()
        print(f"scan filter, first 100-tool list (scanner, first-use pins): {found['scan_first_100_ms']:.1f} ms")
        print(f"scan filter, 100-tool list judged before: {found['scan_cached_100_us']:.1f} us/list")
        print(f"definitions stage, served tool: {found['definitions_stage_us']:.2f} us/call")


if __name__ == "__main__":
    asyncio.run(main())

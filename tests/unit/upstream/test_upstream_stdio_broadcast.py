"""A stdio server's broadcast notifications reach each listener in order, or end its stream: never a gap.

``Subscription`` on its own, then a real stdio child (``tests/support/broadcast_server.py``, written
with the official ``mcp`` SDK) flooding ``StdioStreamStage``'s stream while nobody reads it: the
listener gets the notifications queued before it fell ``SUBSCRIPTION_DEPTH`` behind, in order, and
then a ``ListenerOverflow`` (which the runner turns into an ended stream and an error outcome,
``listener_overflow``), instead of silently missing the rest. The end-to-end counterpart is in
``tests/e2e/test_stream_inspection.py``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bastion.config import RouteSettings, StdioUpstream
from bastion.errors import ListenerOverflow
from bastion.pipeline.context import Exchange, HttpRequest, SseEvent, SseReply
from bastion.pipeline.stages.forward_stdio import StdioStreamStage
from bastion.transport.routes import RouteRuntime
from bastion.upstream.stdio import SUBSCRIPTION_DEPTH, StdioServer, Subscription

BROADCAST_SERVER = Path(__file__).resolve().parents[2] / "support" / "broadcast_server.py"


async def test_a_subscription_delivers_in_order_until_it_falls_behind() -> None:
    subscription = Subscription(depth=3)
    assert [subscription.offer({"seq": seq}) for seq in range(3)] == [True, True, True]
    assert not subscription.overflowed
    assert subscription.offer({"seq": 3}) is False
    assert subscription.overflowed
    assert [(await subscription.next())["seq"] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ListenerOverflow, match="fell more than 3 notifications behind") as caught:
        await subscription.next()
    assert caught.value.code == "listener_overflow"  # its own audit code, not upstream_error


async def test_a_subscription_read_in_time_never_overflows() -> None:
    subscription = Subscription(depth=2)
    for seq in range(10):
        assert subscription.offer({"seq": seq})
        assert (await subscription.next())["seq"] == seq
    assert not subscription.overflowed


@pytest.fixture
async def server() -> AsyncIterator[StdioServer]:
    child = StdioServer("broadcast", sys.executable, (str(BROADCAST_SERVER),), restart_backoff_s=0.2)
    await child.start()
    try:
        yield child
    finally:
        await child.stop()


async def _collect(events: AsyncIterator[SseEvent], into: list[Any]) -> None:
    async for event in events:
        into.append(event.message["params"]["data"]["seq"])


async def test_a_listener_that_falls_behind_gets_an_unbroken_prefix_then_an_error(server: StdioServer) -> None:
    route = RouteRuntime(
        settings=RouteSettings(name="broadcast", stdio=StdioUpstream(command=sys.executable)),
        resource_uri="http://gw.test/mcp/broadcast",
        metadata_url="http://gw.test/.well-known/oauth-protected-resource/mcp/broadcast",
        stdio=server,
    )
    exchange = Exchange(route=route, http=HttpRequest("GET", "/mcp/broadcast", {}, (), "127.0.0.1"))
    await StdioStreamStage().run(exchange)
    assert isinstance(exchange.reply, SseReply)
    events = exchange.reply.events
    first = asyncio.ensure_future(anext(events))  # subscribes, then waits: a listener that reads nothing more
    await asyncio.sleep(0)  # one turn of the loop: the stream has subscribed
    assert server.listeners == 1
    total = SUBSCRIPTION_DEPTH + 100
    answer = await server.request("tools/call", {"name": "flood", "arguments": {"count": total, "size": 16}})
    assert answer["result"]["content"][0]["text"] == f"sent {total}"
    assert server.listeners == 0  # dropped from the broadcast at once, not skipped message by message
    received = [(await first).message["params"]["data"]["seq"]]
    with pytest.raises(ListenerOverflow, match="behind"):
        await _collect(events, received)
    assert received == list(range(len(received)))  # in order, no gap
    assert SUBSCRIPTION_DEPTH <= len(received) < total

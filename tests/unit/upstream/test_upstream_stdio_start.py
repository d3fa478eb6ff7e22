"""``StdioServer.start(strict=True)`` (a reload starting a new stdio route) fails at the first failed attempt,
saying why (a missing command), instead of waiting for the 30 s handshake timeout; the supervisor stops with
``stop``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bastion.errors import UpstreamUnavailable
from bastion.upstream.stdio import StdioServer


async def test_a_missing_command_fails_a_strict_start_at_once(tmp_path: Path) -> None:
    server = StdioServer("broken", str(tmp_path / "no-such-server"), restart_backoff_s=60)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(UpstreamUnavailable) as caught:
        await server.start(strict=True)
    assert loop.time() - began < 5
    assert "'broken' did not become ready" in caught.value.message
    assert "No such file or directory" in caught.value.message
    await server.stop()
    assert server.pid is None


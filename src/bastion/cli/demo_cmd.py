"""``bastion demo``: the gateway in front of real MCP servers, with a scripted session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from bastion.cli.common import fail, out
from bastion.errors import ConfigError

__all__ = ["demo"]


@contextlib.contextmanager
def _stopped_like_ctrl_c(*signals: signal.Signals) -> Iterator[None]:
    """While inside, each of ``signals`` stops the demo as Ctrl-C does.

    ``asyncio.run`` turns SIGINT into the cancellation of the main task (Python docs, asyncio
    "Handling Keyboard Interruption"), so every ``finally`` of the demo runs: the gateway stops,
    the notes server is terminated and the temporary directory (keys, users file, audit log) is
    removed. Relayed as SIGINT, SIGTERM and SIGHUP take the same path at every stage, uvicorn's
    own graceful stop included (it handles SIGINT and SIGTERM while serving, then raises the
    signal again with these handlers back in place). The previous handlers are restored on exit.
    """

    def relay(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    previous = {sig: signal.signal(sig, relay) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def demo(
    once: Annotated[bool, typer.Option("--once", help="Run the scripted session and exit.")] = False,
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1).")] = 8765,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep the demo's data here instead of a temporary directory.")
    ] = None,
) -> None:
    """Start Bastion in front of real MCP servers and show what it enforces."""
    from bastion.demo.runner import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _stopped_like_ctrl_c(signal.SIGTERM, signal.SIGHUP):
            status = asyncio.run(run_demo(port=port, once=once, workdir=workdir, console=out))
    except ConfigError as exc:
        raise fail(exc.message) from None
    except KeyboardInterrupt:
        status = 0
    raise typer.Exit(status)

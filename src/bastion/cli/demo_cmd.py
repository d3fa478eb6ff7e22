"""``bastion demo``: the gateway in front of real MCP servers, with a scripted session."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.common import fail, out
from bastion.errors import ConfigError

__all__ = ["demo"]


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
        status = asyncio.run(run_demo(port=port, once=once, workdir=workdir, console=out))
    except ConfigError as exc:
        raise fail(exc.message) from None
    except KeyboardInterrupt:
        status = 0
    raise typer.Exit(status)

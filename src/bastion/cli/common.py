"""Helpers shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bastion.config import BastionConfig, load_config
from bastion.errors import ConfigError

__all__ = ["ConfigOption", "err", "fail", "load_or_exit", "out"]

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The configuration file.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr and return the ``typer.Exit`` to raise."""
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def load_or_exit(path: Path) -> BastionConfig:
    """Load the configuration or exit 2 with the ``ConfigError`` message."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise fail(exc.message) from None

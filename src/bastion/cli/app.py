"""Command-line entry point (typer). Every failure prints one clear line and exits non-zero."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli import (
    approvals_cmd,
    audit_cmd,
    consent_cmd,
    credentials_cmd,
    demo_cmd,
    policy_cmd,
    scan_cmd,
    token_cmd,
    tools_cmd,
    users_cmd,
)
from bastion.cli.common import ConfigOption, fail, load_or_exit, out
from bastion.errors import ConfigError

__all__ = ["app", "main"]

app = typer.Typer(
    name="bastion",
    help="Bastion: a zero-trust gateway for the Model Context Protocol.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def serve(
    config: ConfigOption = Path("bastion.yaml"),
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    workers: Annotated[
        int, typer.Option(help="Gateway processes on this machine, sharing the port (needs shared stores).")
    ] = 1,
) -> None:
    """Run the gateway with CONFIG."""
    from bastion.cli.serving import run_server
    from bastion.cli.workers import check_workers, run_workers
    from bastion.metrics.multiprocess import prepare_directory
    from bastion.stores.backends import preflight

    settings = load_or_exit(config)
    try:
        check_workers(settings, workers)
        if workers > 1:
            preflight(settings)
            metrics_dir = prepare_directory(settings.data_dir) if settings.metrics.enabled else None
            raise typer.Exit(run_workers(config, workers, host=host, port=port, log_level=log_level,
                                         metrics_dir=metrics_dir))  # fmt: skip
        run_server(settings, host=host, port=port, log_level=log_level, config_path=config)
    except ConfigError as exc:
        raise fail(exc.message) from None


@app.command()
def check(config: ConfigOption = Path("bastion.yaml")) -> None:
    """Validate CONFIG, its policies and secret references; start nothing."""
    from bastion.cli.checking import check_config

    settings = load_or_exit(config)
    try:
        check_config(settings, out)
    except ConfigError as exc:
        raise fail(exc.message) from None


app.add_typer(token_cmd.app, name="token")
app.add_typer(policy_cmd.app, name="policy")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(users_cmd.app, name="users")
app.add_typer(consent_cmd.app, name="consent")
app.add_typer(credentials_cmd.app, name="credentials")
app.add_typer(tools_cmd.app, name="tools")
app.add_typer(approvals_cmd.app, name="approvals")
app.command(name="demo")(demo_cmd.demo)
app.command(name="scan")(scan_cmd.scan)


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())

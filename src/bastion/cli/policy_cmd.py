"""``bastion policy test FILE...``: table-driven policy tests (PASS / FAIL / ERROR per case)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.common import out
from bastion.policy.testing import render, run_policy_tests

__all__ = ["app"]

app = typer.Typer(help="Work with Cedar policies.", no_args_is_help=True)


@app.command("test")
def test_policies(
    files: Annotated[list[Path], typer.Argument(help="YAML files of policy test cases.")],
) -> None:
    """Run the cases; exit 1 when any case fails or errors, or when no case ran."""
    report = run_policy_tests(files)
    render(report, out)
    if not report.results or not report.ok:
        raise typer.Exit(1)

"""``bastion policy test FILE...``: table-driven policy tests (PASS / FAIL / ERROR per case).
``bastion policy diff --since 1h``: what the shadow policy set (``policy.shadow_files``) would have
changed in the decisions of that period (``bastion.policy.shadow``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from bastion.audit import EventFilter
from bastion.cli.common import ConfigOption, fail, load_or_exit, out
from bastion.errors import ConfigError
from bastion.identity import parse_duration
from bastion.policy.shadow import summarise
from bastion.policy.testing import render, run_policy_tests
from bastion.stores.backends import DATABASE_FILE, audit_reader, postgres_database, preflight

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


@app.command("diff")
def diff(
    since: Annotated[str, typer.Option(help="How far back, e.g. 30m, 1h, 2d.")] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of text.")] = False,
    config: ConfigOption = Path("bastion.yaml"),
) -> None:
    """Sum up how the shadow policy set would have changed the decisions of the last SINCE: counts
    by change (allow -> deny, deny -> allow, other policies), the policies involved, examples."""
    settings = load_or_exit(config)
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise fail(str(exc)) from None
    start = datetime.now(UTC) - timedelta(seconds=window)
    database = settings.data_dir / DATABASE_FILE
    try:
        postgres = postgres_database(settings)
        if postgres is not None:
            preflight(settings)
        reader = audit_reader(settings, postgres)
        summary = summarise(reader.events(EventFilter(kind="decision", since=start)))
    except FileNotFoundError:
        raise fail(f"no audit log at {database}") from None
    except ConfigError as exc:
        raise fail(exc.message) from None
    if as_json:
        typer.echo(json.dumps(summary.as_json(), ensure_ascii=True, sort_keys=True))
        return
    if not settings.policy.shadow_files:
        out.print("note: no policy.shadow_files configured now; showing what the log holds", markup=False)
    out.print(f"{summary.changed} of {summary.decisions} call decisions in the last {since} would change", markup=False)
    for kind, count in summary.kinds.most_common():
        out.print(f"  {kind}: {count}", markup=False)
        for example in summary.examples.get(kind, []):
            out.print(
                f"    {example['time']} {example['subject']} {example['route']}/{example['target']}: "
                f"{', '.join(example['enforced']) or '-'} -> {', '.join(example['shadow']) or '-'}",
                markup=False,
            )
    for side, counts in (("enforced", summary.enforced_policies), ("shadow", summary.shadow_policies)):
        if counts:
            listed = ", ".join(f"{policy} ({n})" for policy, n in counts.most_common())
            out.print(f"{side} policies in changed decisions: {listed}", markup=False)

"""``bastion audit verify | tail | search``: read the audit log (read-only)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import typer

from bastion.audit import EventFilter, render_table, to_json_lines
from bastion.audit.query import SQLiteAuditReader
from bastion.audit.store import AuditReader
from bastion.cli.common import ConfigOption, fail, load_or_exit, out
from bastion.errors import ConfigError
from bastion.stores.backends import DATABASE_FILE, audit_reader, postgres_database, preflight

__all__ = ["app"]

app = typer.Typer(help="Verify and search the audit log.", no_args_is_help=True)

DbOption = Annotated[Path | None, typer.Option("--db", help="An embedded audit database (instead of --config).")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")]


def _reader(config: Path, db: Path | None) -> AuditReader:
    """The reader of ``db`` (an embedded log), else of the log CONFIG writes: in ``stores.postgres``
    when set, else in the data directory."""
    if db is None:
        settings = load_or_exit(config)
        try:
            postgres = postgres_database(settings)
            if postgres is not None:
                preflight(settings)
        except ConfigError as exc:
            raise fail(exc.message) from None
        if postgres is not None:
            return audit_reader(settings, postgres)
        db = settings.data_dir / DATABASE_FILE
    if not db.is_file():
        raise fail(f"{db}: no audit database there")
    return SQLiteAuditReader(db)


def _show(events: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        for line in to_json_lines(events):
            out.print(line, markup=False, soft_wrap=True)
    else:
        out.print(render_table(events))


@app.command("verify")
def verify_command(config: ConfigOption = Path("bastion.yaml"), db: DbOption = None) -> None:
    """Check the hash chain; exit 1 naming the first modified, deleted, inserted or reordered record."""
    result = _reader(config, db).verify()
    if result.ok:
        out.print(f"OK: {result.message}", markup=False)
        return
    out.print(f"TAMPERED: {result.message}", markup=False)
    raise typer.Exit(1)


@app.command("tail")
def tail_command(
    config: ConfigOption = Path("bastion.yaml"),
    db: DbOption = None,
    n: Annotated[int, typer.Option("-n", help="How many records.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Show the newest records."""
    _show(list(_reader(config, db).events(EventFilter(limit=n, newest_first=True))), as_json)


@app.command("search")
def search_command(
    config: ConfigOption = Path("bastion.yaml"),
    db: DbOption = None,
    subject: Annotated[str | None, typer.Option(help="Principal subject.")] = None,
    route: Annotated[str | None, typer.Option(help="Route name.")] = None,
    tool: Annotated[str | None, typer.Option(help="Tool name (the record's target).")] = None,
    decision: Annotated[str | None, typer.Option(help="allow or deny.")] = None,
    since: Annotated[datetime | None, typer.Option(help="From this time (inclusive, UTC if no offset).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Before this time (exclusive, UTC if no offset).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many records.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Search records by subject, route, tool, decision and time range."""
    if decision not in (None, "allow", "deny"):
        raise fail("--decision must be allow or deny")
    effect: Literal["allow", "deny"] | None = decision  # type: ignore[assignment]
    filters = EventFilter(
        subject=subject, route=route, tool=tool, decision=effect,
        since=_utc(since), until=_utc(until), limit=limit,
    )  # fmt: skip
    _show(list(_reader(config, db).events(filters)), as_json)


def _utc(moment: datetime | None) -> datetime | None:
    from datetime import UTC

    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)

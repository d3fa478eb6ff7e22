"""``bastion audit verify | tail | search``: read the audit log (read-only)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import typer

from bastion.audit import EventFilter, render_table, to_json_lines
from bastion.audit.checkpoints import (
    Checkpoint,
    CheckpointKeys,
    check_log,
    public_keys_from_jwks,
    read_checkpoints,
)
from bastion.audit.query import SQLiteAuditReader
from bastion.audit.store import AuditReader
from bastion.cli.common import ConfigOption, fail, load_or_exit, out
from bastion.errors import CheckpointInvalid, ConfigError
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


CheckpointsOption = Annotated[
    Path | None,
    typer.Option("--checkpoints", help="Signed checkpoints to hold the log against (default: audit.checkpoints)."),
]
KeysOption = Annotated[
    Path | None,
    typer.Option("--checkpoint-keys", help="Their public keys, a JWK Set (default: the data directory's keys)."),
]


def _checkpoints(config: Path, db: Path | None, path: Path | None, keys_file: Path | None) -> list[Checkpoint]:
    """The verified checkpoints of ``path`` (default: the configuration's file, if written yet; none with
    ``--db`` alone), with the keys of ``keys_file`` or the data directory's. Exit 2 when one does not
    verify, or ``path`` was named and is missing."""
    if path is None:
        if db is not None:
            return []
        settings = load_or_exit(config)
        if not settings.audit.checkpoints.enabled:
            return []
        path = settings.audit.checkpoints.path(settings.data_dir)
        if not path.exists():
            return []  # none written yet
    elif not path.exists():
        raise fail(f"{path}: no checkpoints there")
    try:
        if keys_file is not None:
            keys = public_keys_from_jwks(json.loads(keys_file.read_text(encoding="utf-8")))
        else:
            keys = CheckpointKeys.load_or_create(load_or_exit(config).data_dir, create=False).public_keys()
        return read_checkpoints(path, keys)
    except (CheckpointInvalid, ConfigError) as exc:
        raise fail(f"checkpoints not usable: {exc.message}") from None
    except (OSError, ValueError) as exc:  # the key file given cannot be read, or is not JSON
        raise fail(f"checkpoints not usable: {exc}") from None


@app.command("verify")
def verify_command(
    config: ConfigOption = Path("bastion.yaml"),
    db: DbOption = None,
    checkpoints: CheckpointsOption = None,
    checkpoint_keys: KeysOption = None,
) -> None:
    """Check the hash chain, and hold it against the signed checkpoints; exit 1 naming the first
    modified, deleted, inserted, reordered or truncated record."""
    reader = _reader(config, db)
    result = check_log(reader.verify(), _checkpoints(config, db, checkpoints, checkpoint_keys), reader.hash_at)
    if result.ok:
        out.print(result.message, markup=False, soft_wrap=True)  # "OK: ..."
        return
    out.print(f"TAMPERED: {result.message}", markup=False, soft_wrap=True)
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


@app.command("checkpoint-keys")
def checkpoint_keys_command(config: ConfigOption = Path("bastion.yaml")) -> None:
    """Print the public keys of the audit checkpoints (a JWK Set), to keep beside the checkpoints."""
    settings = load_or_exit(config)
    try:
        keys = CheckpointKeys.load_or_create(settings.data_dir)
    except ConfigError as exc:
        raise fail(exc.message) from None
    out.print(json.dumps(keys.jwks(), indent=2), markup=False, soft_wrap=True)


@app.command("rotate-checkpoint-key")
def rotate_checkpoint_key_command(config: ConfigOption = Path("bastion.yaml")) -> None:
    """Start a new checkpoint signing key; earlier checkpoints keep verifying with the old ones."""
    settings = load_or_exit(config)
    try:
        kid = CheckpointKeys.load_or_create(settings.data_dir).rotate()
    except ConfigError as exc:
        raise fail(exc.message) from None
    out.print(f"checkpoint key {kid} is current; publish the new key set (bastion audit checkpoint-keys)")

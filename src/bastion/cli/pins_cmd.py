"""``bastion tools diff | pins | approve``: review and approve a route's definitions (issue 15).

``diff`` and ``pins`` read the pin store (tables of the data directory's SQLite file, or of
``stores.postgres`` when configured: the one every replica shares) directly, each read one
transaction, safe beside a running gateway. ``diff`` shows every definition the
route holds back (new, changed since its pin, hidden by a scanner finding; or, before the route's
first approval, each one seen) against its pin: the description and title word by word (removed
words as ``[-...-]``, red and struck through; added words as ``{+...+}``, green and underlined, as
``git diff --word-diff`` marks them), every other member that differs
by its JSON pointer, and the findings. Characters a reader would not see (zero-width, bidi
controls, tag characters, ANSI escapes) are written ``\\u{XXXX}``: they are how poisoning hides.

``approve`` does not write the store. As ``bastion approvals approve`` does, it mints a 5-minute
access token for the person named by ``--as`` (the data directory's signing key) and POSTs the
definitions it read, each with its SHA-256, to the running gateway's API (``POST
{base}/portal/api/definitions/{route}``): the gateway judges that person by policy
(``Action::"definitions/approve"`` on ``Server::"<route>"``), pins exactly those hashes (one
that changed since is left held and reported), records ``definition/approved`` and serves the
definitions at once. The gateway stays the audit log's only writer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bastion.catalog.diff import visible
from bastion.catalog.pins import PinStore
from bastion.catalog.pins_memory import MemoryPinStore
from bastion.catalog.review import ReviewItem, review
from bastion.catalog.review import as_json as item_json
from bastion.cli.common import ConfigOption, fail, load_or_exit, out
from bastion.cli.gateway_api import post_as
from bastion.config import BastionConfig
from bastion.errors import ConfigError
from bastion.stores.backends import DATABASE_FILE, pin_store, postgres_database
from bastion.stores.postgres_tables import POSTGRES_ERRORS
from bastion.stores.sqlite import STORE_ERRORS

__all__ = ["register"]

T = TypeVar("T")
_DEFAULT_CONFIG = Path("bastion.yaml")
_WHY = {"new": "new", "drift": "changed since approved", "finding": "scanner finding", "unpinned": "not approved yet"}

RouteOption = Annotated[str, typer.Option("--route", help="The route.")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of text.")]


def _run_read(settings: BastionConfig, read: Callable[[PinStore], Awaitable[T]]) -> T:
    """``read`` on the configured pin store: ``stores.postgres`` when set, else the data directory's
    file (empty when there is no database: nothing is created). Exits 2 when it cannot be read."""
    try:
        postgres = postgres_database(settings)
    except ConfigError as exc:
        raise fail(exc.message) from None
    database = settings.data_dir / DATABASE_FILE
    store: PinStore
    if postgres is not None:
        store, where = pin_store(settings, postgres), "stores.postgres"
    else:
        store = pin_store(settings, None) if database.exists() else MemoryPinStore()
        where = str(database)

    async def run() -> T:
        await store.start()
        try:
            return await read(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (*STORE_ERRORS, *POSTGRES_ERRORS) as exc:
        raise fail(escape(f"cannot read the pin store in {where}: {exc}")) from None


def _settings(config: Path, route: str) -> BastionConfig:
    settings = load_or_exit(config)
    if route not in {r.name for r in settings.routes}:
        raise fail(escape(f"no route named {route!r}"))
    return settings


def _reviewed(settings: BastionConfig, route: str) -> list[ReviewItem]:
    async def read(store: PinStore) -> list[ReviewItem]:
        return review(await store.pins(route), await store.held(route))

    return _run_read(settings, read)


def _utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _json_text(value: Any) -> str:
    return visible(json.dumps(value, ensure_ascii=False, sort_keys=True))


def _print_item(item: ReviewItem) -> None:
    held, pin = item.held, item.pin
    head = Text(f"{held.kind} ", style="bold") + Text(visible(held.name), style="bold")
    head += Text(f"  {_WHY.get(held.reason, held.reason)}{' (served meanwhile)' if held.served else ''}")
    if held.action in ("hide", "block"):
        head += Text(f"  [{held.action}]", style="bold red")
    out.print(head, soft_wrap=True)
    pinned = f"pinned {pin.sha256[:12]} by {visible(pin.approver)}" if pin else "no pin"
    out.print(Text(f"  sha256 {held.sha256[:12]}, {pinned}, seen {_utc(held.last_seen)} UTC"), soft_wrap=True)
    for finding in held.findings:
        where = f" at {finding.get('path')}" if finding.get("path") else ""
        line = f"  finding {finding.get('rule')} ({finding.get('severity')}){where}: {finding.get('message')}"
        out.print(Text(visible(line), style="yellow"), soft_wrap=True)
    for member, ops in item.diff.text.items():
        text = Text(f"  {member}: ")
        for op, words in ops:
            if op == "removed":
                text += Text(f"[-{visible(words)}-]", style="red strike")
            elif op == "added":
                text += Text(f"{{+{visible(words)}+}}", style="green underline")
            else:
                text += Text(visible(words))
        out.print(text, soft_wrap=True)
    for change in item.diff.changes:
        if change.op == "changed":
            line = f"  changed {change.path}: {_json_text(change.before)} -> {_json_text(change.after)}"
        else:
            value = change.after if change.op == "added" else change.before
            line = f"  {change.op} {change.path}: {_json_text(value)}"
        out.print(Text(line, style={"added": "green", "removed": "red"}.get(change.op, "")), soft_wrap=True)


def diff(route: RouteOption, config: ConfigOption = _DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Show what route ROUTE holds back for review, each definition against its pin: why (new,
    changed, a scanner finding, not approved yet), its findings, the description and title word by
    word, and every other member that differs (schemas, annotations) by its JSON pointer."""
    settings = _settings(config, route)
    items = _reviewed(settings, route)
    if as_json:
        typer.echo(json.dumps({"route": route, "held": [item_json(item) for item in items]}, indent=2,
                              ensure_ascii=True))  # fmt: skip
        return
    if not items:
        out.print(f"route {route}: nothing waits for review")
        return
    for item in items:
        _print_item(item)
    out.print(f"approve with: bastion tools approve --route {route} --as NAME", markup=False)


def pins(route: RouteOption, config: ConfigOption = _DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """List the definitions pinned on route ROUTE: kind, name, SHA-256, who approved (first_use: pinned
    automatically at first sight), whether a person reviewed it, when (UTC)."""
    settings = _settings(config, route)
    pinned = _run_read(settings, lambda store: store.pins(route))
    if as_json:
        rows = [{"kind": p.kind, "name": p.name, "sha256": p.sha256, "approver": p.approver,
                 "reviewed": p.reviewed, "pinned_at": p.pinned_at} for p in pinned]  # fmt: skip
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=True))
        return
    if not pinned:
        out.print(f"route {route}: nothing pinned")
        return
    table = Table(header_style="bold")
    for name in ("kind", "name", "sha256", "approver", "reviewed", "pinned (UTC)"):
        table.add_column(name, overflow="fold")
    for p in pinned:
        cells = (p.kind, visible(p.name), p.sha256[:12], visible(p.approver), "yes" if p.reviewed else "no",
                 _utc(p.pinned_at))  # fmt: skip
        table.add_row(*(Text(cell) for cell in cells))
    out.print(table)


def approve(
    route: RouteOption,
    as_: Annotated[str, typer.Option("--as", help='Who approves (policy judges them: Action::"definitions/approve").')],
    tool: Annotated[list[str] | None, typer.Option("--tool", help="Only this tool (repeatable).")] = None,
    name: Annotated[list[str] | None, typer.Option("--name", help="Only definitions of this name, any kind.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit record).")] = "",
    email: Annotated[str | None, typer.Option("--email", help="The approver's email claim.")] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="A group of the approver (repeatable).")] = None,
    url: Annotated[str | None, typer.Option("--url", help="The gateway's base URL (default: server.base_url).")] = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="PEM CA bundle for the gateway's TLS.")] = None,
    config: ConfigOption = _DEFAULT_CONFIG,
) -> None:
    """Approve the definitions route ROUTE holds back (all: the route's catalog as approved, so anything
    new later is quarantined; or those named by --tool / --name), through the running gateway, which
    pins exactly the hashes read here and serves them at once.
    Exit 1 when nothing matched, the gateway refused (policy: 403) or is not reachable, or a
    definition changed since it was read here (it stays held: review it again)."""
    settings = _settings(config, route)
    items = [
        item for item in _reviewed(settings, route)
        if (not tool and not name) or (item.held.kind == "tool" and item.held.name in (tool or ()))
        or item.held.name in (name or ())
    ]  # fmt: skip
    if not items:
        raise fail(escape(f"route {route}: nothing held matches; see bastion tools diff --route {route}"), code=1)
    wanted = [{"kind": i.held.kind, "name": i.held.name, "sha256": i.held.sha256} for i in items]
    body = {"approve": wanted, "reason": reason, "whole_route": not tool and not name}
    response = post_as(settings, f"/portal/api/definitions/{route}", body, sub=as_, email=email, groups=group or [],
                       url=url, ca_file=ca_file, what="approvals")  # fmt: skip
    try:
        answer = response.json()
        approved, left = list(answer["approved"]), list(answer["left"])
    except (ValueError, KeyError, TypeError):
        raise fail("the gateway answered 200 without what it approved", code=1) from None
    for entry in approved:
        out.print(Text(visible(f"approved {entry.get('kind')} {entry.get('name')} ({str(entry.get('sha256'))[:12]})")))
    for entry in left:
        out.print(Text(visible(f"not approved {entry.get('kind')} {entry.get('name')}: it changed since it was "
                               "read; review it again"), style="red"))  # fmt: skip
    if left:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``diff``, ``pins`` and ``approve`` to ``app`` (``bastion tools``)."""
    app.command("diff")(diff)
    app.command("pins")(pins)
    app.command("approve")(approve)

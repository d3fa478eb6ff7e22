"""``bastion approvals list | show | stats | approve | deny``: human approvals of tool calls.

``list``, ``show`` and ``stats`` read the approval store (the ``approvals`` table of the data
directory's SQLite file, or of ``stores.postgres`` when configured: the one every replica shares)
directly: each read is one transaction, safe beside a running gateway.
A pending request whose ``expires_at`` has passed is shown ``expired`` in the expires column:
the gateway marks it so within seconds. A data directory without a database has no requests
(nothing is created).

``approve`` and ``deny`` do not write the store. The decision is made by the running gateway,
because it is the only writer of the audit log (the decision, who made it and why become a
record in the chain) and because it wakes the call held for the request. The command mints a
5-minute access token for the person named by ``--as``, exactly as ``bastion token mint``
does (the data directory's signing key, kind ``User``), and POSTs the decision with it to the
gateway's portal API, ``POST {base}/portal/api/approvals/{id}`` with ``{"decision":
"approve"|"deny", "reason": ...}``. The gateway then judges that person as any approver:
policy must allow ``Action::"approvals/decide"``, and nobody reviews their own request.

Text from the store or the gateway (labels, arguments, reasons) may have been chosen by a
client: table cells and lines are plain ``rich.text.Text`` with control characters escaped,
and JSON output is ASCII-only, as in ``bastion audit`` (``bastion.audit.render``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bastion.approvals import ApprovalRequest, ApprovalStatus, ApprovalStore
from bastion.approvals.store_memory import MemoryApprovalStore
from bastion.cli.common import ConfigOption, fail, load_or_exit, out
from bastion.cli.gateway_api import post_as
from bastion.config import BastionConfig
from bastion.errors import ConfigError
from bastion.stores.backends import DATABASE_FILE, approval_store, postgres_database
from bastion.stores.postgres_tables import POSTGRES_ERRORS
from bastion.stores.sqlite import STORE_ERRORS

__all__ = ["app"]

app = typer.Typer(help="List, inspect, approve and deny approval requests.", no_args_is_help=True)

T = TypeVar("T")

"""Lifetime of the access token ``approve``/``deny`` mint for the approver (seconds)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_DEFAULT_CONFIG = Path("bastion.yaml")


class StatusFilter(StrEnum):
    """``--status``: one status, or ``all``."""

    pending = "pending"
    approved = "approved"
    denied = "denied"
    expired = "expired"
    consumed = "consumed"
    all = "all"


# reading the store


async def _read(store: ApprovalStore, read: Callable[[ApprovalStore], Awaitable[T]]) -> T:
    """``read(store)`` between ``start`` and ``close``."""
    await store.start()
    try:
        return await read(store)
    finally:
        await store.close()


def _run_read(settings: BastionConfig, read: Callable[[ApprovalStore], Awaitable[T]]) -> T:
    """``read`` on the configured approval store: ``stores.postgres`` when set, else the data
    directory's file (an empty store when there is no database: nothing is created). Exits 2 when
    the store cannot be read."""
    try:
        postgres = postgres_database(settings)
    except ConfigError as exc:
        raise fail(exc.message) from None
    database = settings.data_dir / DATABASE_FILE
    store: ApprovalStore
    if postgres is not None:
        store, where = approval_store(settings, postgres), "stores.postgres"
    else:
        store = approval_store(settings, None) if database.exists() else MemoryApprovalStore()
        where = str(database)
    try:
        return asyncio.run(_read(store, read))
    except (*STORE_ERRORS, *POSTGRES_ERRORS) as exc:
        raise fail(escape(f"cannot read the approval store in {where}: {exc}")) from None


def _fields(request: ApprovalRequest) -> dict[str, Any]:
    """Every field of ``request``, the binding's flattened; times as epoch seconds (``--json``)."""
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name != "binding"}
    fields["policy_ids"] = list(request.policy_ids)
    binding = dataclasses.asdict(request.binding)
    return {"id": request.id, "kind": request.kind, "status": request.status, **binding, **fields}


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=True)


def _plain(value: Any) -> Text:
    """``value`` as a cell: no markup parsed, control and bidi characters as ``\\xNN``/``\\uNNNN``."""
    text = "-" if value is None or value == "" else str(value)
    return Text(_CONTROL.sub(_escape, text))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _utc(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _expires(request: ApprovalRequest, now: float) -> str:
    """``in Nm`` (``in NhMMm`` beyond an hour) or ``expired`` for a pending or approved request;
    the UTC time for a decided, consumed or expired one."""
    if request.status not in ("pending", "approved"):
        return _utc(request.expires_at) or "-"
    left = request.expires_at - now
    if left <= 0:
        return "expired"
    minutes = math.ceil(left / 60)
    return f"in {minutes}m" if minutes < 60 else f"in {minutes // 60}h{minutes % 60:02d}m"


@app.command("list")
def list_command(
    config: ConfigOption = _DEFAULT_CONFIG,
    status: Annotated[StatusFilter, typer.Option(help="Only requests with this status.")] = StatusFilter.pending,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array with every field.")] = False,
) -> None:
    """List approval requests, newest first: id, status, kind, requester, client, route, tool, risk,
    when requested and when it expires (UTC; "in Nm" or "expired" for an open request)."""
    settings = load_or_exit(config)
    wanted = None if status is StatusFilter.all else status.value
    requests = _run_read(settings, lambda store: store.list(cast("ApprovalStatus | None", wanted), limit=limit))
    if as_json:
        typer.echo(_dumps([_fields(r) for r in requests]))
        return
    if not requests:
        out.print(f"no {'' if wanted is None else wanted + ' '}approval requests")
        return
    now = time.time()
    table = Table(header_style="bold")
    for name in ("id", "status", "kind", "requester", "client", "route", "tool", "risk", "requested (UTC)",
                 "expires (UTC)"):  # fmt: skip
        table.add_column(name, overflow="fold")
    for r in requests:
        cells = (r.id, r.status, r.kind, r.requester_label, r.client_id, r.binding.route, r.binding.tool, r.risk,
                 _utc(r.created_at), _expires(r, now))  # fmt: skip
        table.add_row(*(_plain(cell) for cell in cells))
    out.print(table)


@app.command()
def show(
    approval_id: Annotated[str, typer.Argument(metavar="ID", help="The approval request's id.")],
    config: ConfigOption = _DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON object with every field.")] = False,
) -> None:
    """Every field of one approval request, its (redacted) arguments pretty-printed. Exit 1 when
    there is no request with this id."""
    settings = load_or_exit(config)
    request = _run_read(settings, lambda store: store.get(approval_id))
    if request is None:
        raise fail(escape(f"no approval request {approval_id}"), code=1)
    if as_json:
        typer.echo(_dumps(_fields(request)))
        return
    b = request.binding
    lines = (
        ("id", request.id), ("status", request.status), ("kind", request.kind),
        ("requester", request.requester_label), ("requester key", b.requester), ("client", request.client_id),
        ("route", b.route), ("tool", b.tool), ("risk", request.risk), ("classification", request.classification),
        ("arguments sha256", b.arguments_sha256), ("policy version", b.policy_version),
        ("policies", ", ".join(request.policy_ids)), ("decision id", request.decision_id),
        ("requested (UTC)", _utc(request.created_at)), ("expires (UTC)", _utc(request.expires_at)),
        ("decided (UTC)", _utc(request.decided_at)), ("approver", request.approver),
        ("approver key", request.approver_key), ("reason", request.reason),
        ("consumed (UTC)", _utc(request.consumed_at)), ("consumed by", request.consumed_by),
    )  # fmt: skip
    for label, value in lines:
        out.print(Text(f"{label + ':':<18}") + _plain(value), soft_wrap=True)
    out.print(Text("arguments:"))
    out.print(Text(_dumps(request.arguments)), soft_wrap=True)


@app.command()
def stats(
    config: ConfigOption = _DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help='{"counts": {...}, "median_decision_s": x|null}.')] = False,
) -> None:
    """Requests by status and the median seconds from request to decision."""
    settings = load_or_exit(config)
    result = _run_read(settings, lambda store: store.stats())
    if as_json:
        typer.echo(_dumps({"counts": result.counts, "median_decision_s": result.median_decision_s}))
        return
    for status, count in result.counts.items():
        out.print(f"{status + ':':<11}{count}")
    median = result.median_decision_s
    out.print("median time to decision: " + ("no decision yet" if median is None else f"{median:.1f} s"))


# deciding through the gateway

ReasonOption = Annotated[str, typer.Option("--reason", help="Why (required: an approver must say why).")]
AsOption = Annotated[
    str,
    typer.Option(
        "--as",
        help="Who decides: the subject of the access token minted with the data directory's signing key. "
        'Policy judges this person (Action::"approvals/decide").',
    ),
]
EmailOption = Annotated[str | None, typer.Option("--email", help="The approver's email claim.")]
GroupOption = Annotated[
    list[str] | None,
    typer.Option(
        "--group",
        help="A group of the approver (repeatable). Groups given here are claimed by whoever holds the data "
        "directory's signing key, not checked against an identity provider.",
    ),
]
UrlOption = Annotated[str | None, typer.Option("--url", help="The gateway's base URL (default: server.base_url).")]
CaFileOption = Annotated[Path | None, typer.Option("--ca-file", help="PEM CA bundle to trust for the gateway's TLS.")]


def _decide(approve: bool, approval_id: str, reason: str, sub: str, email: str | None, groups: list[str] | None,
            url: str | None, ca_file: Path | None, config: Path) -> None:  # fmt: skip
    """Send the decision to the running gateway and print what it says (exit 1 when it refuses or
    cannot be reached)."""
    if not reason.strip():
        raise fail("--reason is empty: an approver must say why")
    settings = load_or_exit(config)
    body = {"decision": "approve" if approve else "deny", "reason": reason}
    response = post_as(settings, f"/portal/api/approvals/{approval_id}", body, sub=sub, email=email,
                       groups=groups or [], url=url, ca_file=ca_file, what="decisions")  # fmt: skip
    try:
        view = response.json().get("approval")
    except (ValueError, AttributeError):
        view = None
    if not isinstance(view, dict):
        raise fail("the gateway answered 200 without the decided approval", code=1)
    requester = view.get("requester")  # the requester's label (bastion.portal.approvals, ApprovalPages.view)
    summary = (f"{'approved' if approve else 'denied'} {view.get('id', approval_id)} ({view.get('tool')} on "
               f"{view.get('route')} for {requester})")  # fmt: skip
    out.print(_plain(summary), soft_wrap=True)


@app.command()
def approve(
    approval_id: Annotated[str, typer.Argument(metavar="ID", help="The approval request's id.")],
    reason: ReasonOption,
    as_: AsOption,
    email: EmailOption = None,
    group: GroupOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    config: ConfigOption = _DEFAULT_CONFIG,
) -> None:
    """Approve request ID as the person named by --as, through the running gateway (it records the
    decision in the audit log and releases the held call). Exit 1 when the gateway refuses (your own
    request, policy: 403; unknown: 404; not pending: 409) or is not reachable."""
    _decide(True, approval_id, reason, as_, email, group, url, ca_file, config)


@app.command()
def deny(
    approval_id: Annotated[str, typer.Argument(metavar="ID", help="The approval request's id.")],
    reason: ReasonOption,
    as_: AsOption,
    email: EmailOption = None,
    group: GroupOption = None,
    url: UrlOption = None,
    ca_file: CaFileOption = None,
    config: ConfigOption = _DEFAULT_CONFIG,
) -> None:
    """Deny request ID as the person named by --as, through the running gateway (it records the
    decision in the audit log and answers the held call). Exit 1 when the gateway refuses or is not
    reachable."""
    _decide(False, approval_id, reason, as_, email, group, url, ca_file, config)

"""``bastion tools list``: each route's tool inventory, the inventory step of a rollout.

Connects to each upstream as the gateway does (``bastion.gateway.Gateway._route``): a stdio
route's server is started with ``StdioServer``, an HTTP route is reached with
``HttpUpstream`` through the egress guard (initialize, then ``tools/list``). Pages are
fetched by ``ToolCatalog.reload``, and each tool's Cedar resource is built by the route's
``ToolInventory``, so the risk shown is the one calls are judged by. Whether some principal
could be permitted to call a tool is ``PolicyEngine.may_permit`` (Cedar, the principal and
context unknown; an over-approximation); whether calls need approval is
``PolicyEngine.approval_need`` (the permits that may allow one carry ``@approval``: always, some,
no). A destructive tool that some permit may allow without approval is flagged ``unapproved``.

A route with per-user ``credentials`` is not listed (that takes a person's credential):
one line says so, and its configured tools follow. Tools the configuration names but the
upstream does not list are shown too, flagged ``unlisted``. An upstream that fails gives
one line with the error and exit status 1 once every route is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bastion.audit import to_json_lines
from bastion.catalog import ToolCatalog
from bastion.cli import pins_cmd
from bastion.cli.common import ConfigOption, fail, load_or_exit, out
from bastion.config import BastionConfig, RouteSettings
from bastion.egress import AllowList, EgressGuard
from bastion.errors import BastionError, ConfigError, UpstreamError
from bastion.policy import PolicyEngine, ResourceRef
from bastion.transport.routes import tool_inventory
from bastion.upstream.configured import http_upstream, stdio_upstream
from bastion.upstream.http import HttpUpstream
from bastion.upstream.stdio import HANDSHAKE_VERSION

__all__ = ["app"]

app = typer.Typer(help="The tool inventory of each route; review and approve its definitions.", no_args_is_help=True)
pins_cmd.register(app)  # diff, pins, approve (issue 15)

PERMITTED_NOTE = (
    "permitted: whether some principal could be permitted to call the tool (Cedar with the caller and "
    "context unknown; 'yes' may over-approximate, 'no' means no policy can); approval: whether calls "
    "need a person's approval (always, some, no: by the permits that may allow them)"
)
_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
Page = dict[str, Any]


def _flags(ref: ResourceRef, listed: bool, engine: PolicyEngine) -> list[str]:
    flags = [] if listed else ["unlisted"]
    if not ref.attrs.get("owner"):
        flags.append("no-owner")
    if not ref.attrs.get("classification"):
        flags.append("no-classification")
    if ref.attrs.get("risk") == "destructive":
        flags.append("destructive")
        if engine.may_permit(ref) and engine.approval_need(ref) != "always":
            flags.append("unapproved")  # destructive and callable without a person's approval
    return flags


def _row(ref: ResourceRef, engine: PolicyEngine, *, listed: bool) -> dict[str, Any]:
    """One tool's inventory line (the JSON object of ``--json``)."""
    return {
        "route": ref.route,
        "tool": ref.name,
        "risk": ref.attrs["risk"],
        "risk_source": ref.attrs["risk_source"],
        "owner": ref.attrs["owner"],
        "classification": ref.attrs["classification"],
        "labels": list(ref.attrs["labels"]),
        "listed": listed,
        "permitted": engine.may_permit(ref),
        "approval": engine.approval_need(ref),
        "flags": _flags(ref, listed, engine),
    }


async def _list_stdio(config: BastionConfig, route: RouteSettings) -> list[Page]:
    server = stdio_upstream(route)
    try:
        await server.start()

        async def fetch_page(cursor: str | None) -> Page:  # as StdioForwardStage.load_catalog
            response = await server.request("tools/list", {"cursor": cursor} if cursor else {}, timeout_s=30)
            result = response.get("result")
            if not isinstance(result, dict):
                raise UpstreamError(f"tools/list failed: {response.get('error')}")
            return result

        return await _catalog(fetch_page)
    finally:
        await server.stop()


async def _post(upstream: HttpUpstream, message: dict[str, Any], session_id: str | None) -> tuple[Page, str | None]:
    """POST one JSON-RPC request and return its ``result`` and the session id (as
    ``HttpForwardStage._request`` reads a JSON or SSE answer). Raises ``UpstreamError``."""
    headers = dict(_JSON_HEADERS)
    if message["method"] != "initialize":
        headers["mcp-protocol-version"] = HANDSHAKE_VERSION
    response = await upstream.send("POST", headers=headers, body=json.dumps(message).encode(), session_id=session_id)
    answer: Any = None
    try:
        if response.kind == "json":
            answer = json.loads(response.body)
        elif response.kind == "sse" and response.events is not None:
            async for event in response.events:
                candidate = json.loads(event.data) if event.data else None
                if isinstance(candidate, dict) and ("result" in candidate or "error" in candidate):
                    answer = candidate
                    break
    except ValueError as exc:
        raise UpstreamError(f"upstream answered {message['method']} with invalid JSON") from exc
    finally:
        await response.aclose()
    if not isinstance(answer, dict) or not isinstance(answer.get("result"), dict):
        detail = answer.get("error") if isinstance(answer, dict) else None
        raise UpstreamError(f"upstream answered {message['method']} with status {response.status}: {detail}")
    return answer["result"], response.session_id


async def _list_http(config: BastionConfig, route: RouteSettings) -> list[Page]:
    guard = EgressGuard(allow=AllowList.parse(config.egress.allow), ca_file=config.egress.ca_file)
    upstream = http_upstream(route, guard)
    session: str | None = None
    try:
        hello = {"protocolVersion": HANDSHAKE_VERSION, "capabilities": {},
                 "clientInfo": {"name": "bastion-tools-list", "version": "0.1.0"}}  # fmt: skip
        _, session = await _post(upstream, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}, None)
        headers = {**_JSON_HEADERS, "mcp-protocol-version": HANDSHAKE_VERSION}
        body = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        await (await upstream.send("POST", headers=headers, body=body, session_id=session)).aclose()

        async def fetch_page(cursor: str | None) -> Page:
            message = {"jsonrpc": "2.0", "id": f"bastion-tools-{cursor or 0}", "method": "tools/list",
                       "params": {"cursor": cursor} if cursor else {}}  # fmt: skip
            return (await _post(upstream, message, session))[0]

        return await _catalog(fetch_page)
    finally:
        if session is not None:
            with contextlib.suppress(BastionError):  # best effort: the upstream expires the session itself
                await (await upstream.send("DELETE", headers={}, session_id=session)).aclose()
        await upstream.aclose()
        await guard.aclose()


async def _catalog(fetch_page: Any) -> list[Page]:
    """Every tool definition, paged by ``ToolCatalog.reload``; raises the fetch's ``UpstreamError``
    (``reload`` itself only reports failure)."""
    failures: list[UpstreamError] = []

    async def fetch(cursor: str | None) -> Page:
        try:
            page: Page = await fetch_page(cursor)
        except UpstreamError as exc:
            failures.append(exc)
            raise
        return page

    catalog = ToolCatalog()
    if not await catalog.reload(fetch):
        raise failures[-1]
    return list(catalog.tools.values())


async def _route_lines(config: BastionConfig, route: RouteSettings, engine: PolicyEngine) -> list[dict[str, Any]]:
    """The route's lines: one per tool, or a note (``status``) and the configured tools."""
    inventory = tool_inventory(route)
    lines: list[dict[str, Any]] = []
    definitions: list[Page] = []
    if route.credentials is not None:
        lines.append({"route": route.name, "status": "per-user-credentials",
                      "message": "upstream credentials are per user: not listed without a person; "
                                 "configured tools only"})  # fmt: skip
    else:
        try:
            definitions = await (_list_stdio if route.stdio is not None else _list_http)(config, route)
        except (BastionError, OSError) as exc:
            message = exc.message if isinstance(exc, BastionError) else str(exc)
            return [{"route": route.name, "status": "error", "message": f"{type(exc).__name__}: {message}"}]
    names: set[str] = set()
    for definition in definitions:
        try:
            ref = inventory.ref(definition)
        except ValueError:
            continue  # a definition without a usable name cannot be called either
        names.add(ref.name)
        lines.append(_row(ref, engine, listed=True))
    lines.extend(_row(inventory.unlisted(name), engine, listed=False) for name in route.tools if name not in names)
    return lines


def _print_table(lines: list[dict[str, Any]]) -> None:
    out.print(PERMITTED_NOTE, markup=False, soft_wrap=True)
    table = Table(header_style="bold")
    for name in ("route", "tool", "risk", "source", "owner", "classification", "labels", "permitted",
                 "approval", "flags"):  # fmt: skip
        table.add_column(name, overflow="fold")
    for line in lines:
        if "tool" not in line:
            continue
        table.add_row(
            line["route"], line["tool"], line["risk"], line["risk_source"], line["owner"] or "-",
            line["classification"] or "-", ",".join(line["labels"]) or "-", "yes" if line["permitted"] else "no",
            "no", ",".join(line["flags"]), style="bold red" if line["flags"] else None,
        )  # fmt: skip
    out.print(table)
    for line in lines:
        if "tool" not in line:
            out.print(f"route {line['route']}: {line['status']}: {line['message']}", markup=False, soft_wrap=True)


@app.command("list")
def list_command(
    config: ConfigOption = Path("bastion.yaml"),
    route: Annotated[str | None, typer.Option("--route", help="Only this route.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
) -> None:
    """Connect to each upstream and print its tools: risk and where it came from (config, annotations,
    default), owner, classification, labels, whether any policy can permit a call, and whether calls
    need approval (always, some, no: whether the permits that may allow a call carry @approval).
    Flags mark tools with no owner, no classification, destructive, destructive and callable
    without approval (unapproved), or unlisted (configured but not listed by the upstream); JSON lines
    carry "status" (per-user-credentials or error) for a route that was not listed. Exit 1 when an
    upstream failed."""
    settings = load_or_exit(config)
    routes = [r for r in settings.routes if route is None or r.name == route]
    if not routes:
        raise fail(f"no route named {route!r}")
    try:
        engine = PolicyEngine.load(settings.policy.files, settings.policy.schema_file)
    except ConfigError as exc:
        raise fail(exc.message) from None

    async def collect() -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for item in routes:
            lines.extend(await _route_lines(settings, item, engine))
        return lines

    lines = asyncio.run(collect())
    if as_json:
        for text in to_json_lines(lines):
            out.print(text, markup=False, soft_wrap=True)
    else:
        _print_table(lines)
    if any(line.get("status") == "error" for line in lines):
        raise typer.Exit(1)

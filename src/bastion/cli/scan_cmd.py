"""``bastion scan``: scan MCP tool definitions for poisoning, and the MCP client configurations on
this machine for hard-coded secrets and servers reached without Bastion.

- ``bastion scan --definitions FILE``: the definitions in FILE (a JSON array or JSON lines of
  ``Tool`` objects, or a saved ``tools/list`` result), scanned by
  ``bastion.scan.definitions.scan_definition``; no server is contacted.
- ``bastion scan``: every client configuration found (``bastion.scan.clients``), or those given
  with ``--config-file``; inventories the servers and checks them (``bastion.scan.config_checks``).
  With ``--connect`` each server is started (stdio) or reached (HTTP) with the ``mcp`` SDK client
  (``bastion.scan.connect``) and its definitions are scanned; a server that fails is reported on
  one line.

Output: a table (default), ``--json`` (one JSON document), ``--sarif FILE`` (SARIF 2.1.0).
``--fail-on low|medium|high``: exit 1 when a finding is at or above that severity. Exit 2 for a
file that cannot be read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bastion.cli.common import err, fail, out
from bastion.scan.clients import ClientConfig, ServerEntry, client_config_paths, read_client_config
from bastion.scan.config_checks import check_server
from bastion.scan.connect import DEFAULT_TIMEOUT_S, Listing, list_definitions
from bastion.scan.findings import SEVERITIES, Severity, at_least
from bastion.scan.listing import ListedDefinition, parse_definitions, scan_definitions
from bastion.scan.report import ScanResult, to_sarif

__all__ = ["scan"]

_STYLE = {"high": "bold red", "medium": "yellow", "low": "dim"}
MAX_PARALLEL = 4


class FailOn(StrEnum):
    """``--fail-on`` levels."""

    low = "low"
    medium = "medium"
    high = "high"


@dataclass(slots=True)
class _Inventory:
    configs: list[ClientConfig]
    listings: dict[int, Listing]


def _definitions_mode(path: Path) -> tuple[list[ScanResult], dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
        definitions = parse_definitions(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}") from None
    except ValueError as exc:  # not one of the accepted shapes; the message says why
        raise fail(f"{path}: {exc}") from None
    results = scan_definitions(definitions, source=str(path))
    return results, {"definitions": len(definitions)}


def _configs(files: Sequence[Path] | None) -> list[ClientConfig]:
    if files:
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise fail(f"no such configuration file: {missing[0]}")
        return [read_client_config(f) for f in files]
    return [read_client_config(path, client) for client, path in client_config_paths()]


async def _connect_all(entries: list[ServerEntry], timeout_s: float) -> list[Listing]:
    """List every entry's definitions, at most four at a time, with a progress bar on stderr."""
    listings: list[Listing | None] = [None] * len(entries)
    limiter = anyio.CapacityLimiter(MAX_PARALLEL)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as progress:  # fmt: skip
        task = progress.add_task("connecting to MCP servers", total=len(entries))

        async def one(i: int) -> None:
            async with limiter:
                progress.update(task, description=f"connecting to {entries[i].name}")
                listings[i] = await list_definitions(entries[i], timeout_s=timeout_s)
                progress.advance(task)

        async with anyio.create_task_group() as group:
            for i in range(len(entries)):
                group.start_soon(one, i)
    return [listing for listing in listings if listing is not None]


def _unique(entries: list[ServerEntry]) -> list[ServerEntry]:
    """One entry per distinct server (the same server named by several clients is started once)."""
    seen: dict[tuple[str, str, str], ServerEntry] = {}
    for entry in entries:
        seen.setdefault((entry.transport, entry.target, json.dumps(dict(entry.env), sort_keys=True)), entry)
    return list(seen.values())


def _listing_results(listings: list[Listing]) -> list[ScanResult]:
    results: list[ScanResult] = []
    for listing in listings:
        if listing.error is not None:
            continue
        others = [d.get("name", "") for other in listings if other is not listing and other.error is None
                  for kind, d in other.definitions if kind == "tool"]  # fmt: skip
        definitions = [ListedDefinition(kind, d, f"{listing.entry.pointer}#/{kind}s/{i}", listing.entry.name)
                       for i, (kind, d) in enumerate(listing.definitions)]  # fmt: skip
        results += scan_definitions(definitions, source=str(listing.entry.source), extra_names=[o for o in others if o])
    return results


def _config_mode(files: Sequence[Path] | None, bastion: str | None, connect: bool,
                 timeout_s: float) -> tuple[list[ScanResult], dict[str, Any]]:  # fmt: skip
    configs = _configs(files)
    entries = [entry for config in configs for entry in config.servers]
    results = [ScanResult(finding, str(entry.source), entry.name, "server", "", entry.pointer)
               for entry in entries for finding in check_server(entry, bastion=bastion)]  # fmt: skip
    listings: list[Listing] = []
    if connect and entries:
        listings = anyio.run(_connect_all, _unique(entries), timeout_s)
        results += _listing_results(listings)
    by_target = {(ls.entry.transport, ls.entry.target): ls for ls in listings}
    servers = []
    for entry in entries:
        listing = by_target.get((entry.transport, entry.target))
        row: dict[str, Any] = {"client": entry.client, "source": str(entry.source), "server": entry.name,
                               "transport": entry.transport, "target": entry.target}  # fmt: skip
        if listing is not None:
            row["status"] = "error" if listing.error else "listed"
            row["error"] = listing.error
            row["definitions"] = len(listing.definitions)
        servers.append(row)
    problems = [{"source": str(p.source), "message": p.message} for c in configs for p in c.problems]
    summary = {"configurations": [str(c.source) for c in configs], "servers": servers, "problems": problems}
    return results, summary


def _print_table(results: list[ScanResult], summary: dict[str, Any]) -> None:
    if "servers" in summary:
        if not summary["configurations"]:
            out.print("no MCP client configuration found (give --config-file FILE)", markup=False)
            return
        inventory = Table(header_style="bold", title="MCP servers")
        for column in ("client", "server", "transport", "target", "status"):
            inventory.add_column(column, overflow="fold")
        for row in summary["servers"]:
            status = row.get("status", "-")
            if row.get("error"):
                status = f"error: {row['error']}"
            elif status == "listed":
                status = f"listed {row['definitions']} definition(s)"
            inventory.add_row(row["client"], row["server"], row["transport"], row["target"], status,
                              style="red" if row.get("error") else None)  # fmt: skip
        out.print(inventory)
        for problem in summary["problems"]:
            out.print(f"{problem['source']}: {problem['message']}", markup=False, soft_wrap=True)
    else:
        out.print(f"{summary['definitions']} definition(s) scanned", markup=False)
    if not results:
        out.print("no findings", markup=False)
        return
    table = Table(header_style="bold", title="Findings")
    for column in ("severity", "rule", "where", "path", "message"):
        table.add_column(column, overflow="fold")
    ordered = sorted(results, key=lambda r: (-SEVERITIES.index(r.finding.severity), r.server, r.definition))
    for result in ordered:
        where = "/".join(n for n in (result.server, result.definition) if n) or result.source
        message = result.finding.message + (f"\n{result.finding.excerpt}" if result.finding.excerpt else "")
        table.add_row(result.finding.severity, result.finding.rule, where, result.finding.path, message,
                      style=_STYLE[result.finding.severity])  # fmt: skip
    out.print(table)
    counts = {s: sum(1 for r in results if r.finding.severity == s) for s in reversed(SEVERITIES)}
    out.print(", ".join(f"{n} {s}" for s, n in counts.items()), markup=False)


def scan(
    definitions: Annotated[
        Path | None,
        typer.Option(
            "--definitions",
            help="Scan the tool definitions in FILE (JSON "
            "array or JSON lines of Tool objects, or a saved tools/list result); no server is contacted.",
            metavar="FILE",
        ),
    ] = None,
    config_file: Annotated[
        list[Path] | None,
        typer.Option(
            "--config-file",
            help="An MCP client configuration to read instead of this machine's (repeatable).",
            metavar="FILE",
        ),
    ] = None,
    bastion: Annotated[
        str | None,
        typer.Option(
            "--bastion", help="Bastion's base URL: HTTP servers under it are reached through Bastion.", metavar="URL"
        ),
    ] = None,
    connect: Annotated[bool, typer.Option("--connect", help="Start or reach each server and scan its tools.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds allowed per server with --connect.", min=1.0)
    ] = DEFAULT_TIMEOUT_S,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of tables.")] = False,
    sarif: Annotated[
        Path | None, typer.Option("--sarif", help="Also write the findings as SARIF 2.1.0 to FILE.", metavar="FILE")
    ] = None,
    fail_on: Annotated[
        FailOn | None, typer.Option("--fail-on", help="Exit 1 when a finding is at or above this severity.")
    ] = None,
) -> None:
    """Scan MCP tool definitions for poisoning (hidden instructions, secrets and exfiltration, shadowing,
    invisible Unicode, encoded payloads), and the MCP client configurations on this machine (Claude Desktop,
    Claude Code, VS Code, Cursor, Windsurf, Zed) for hard-coded secrets and servers reached without Bastion."""
    if definitions is not None:
        if config_file or connect:
            raise fail("--definitions scans a file; it does not combine with --config-file or --connect")
        results, summary = _definitions_mode(definitions)
    else:
        results, summary = _config_mode(config_file, bastion, connect, timeout)
    if sarif is not None:
        try:
            sarif.write_text(json.dumps(to_sarif(results), indent=2, ensure_ascii=False), encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot write {sarif}: {exc}") from None
    if as_json:
        document = {**summary, "results": [r.as_json() for r in results]}
        out.print(json.dumps(document, indent=2, ensure_ascii=False), markup=False, soft_wrap=True, highlight=False)
    else:
        _print_table(results, summary)
    floor: Severity | None = None if fail_on is None else SEVERITIES[SEVERITIES.index(fail_on.value)]
    if floor is not None and any(at_least(r.finding.severity, floor) for r in results):
        raise typer.Exit(1)

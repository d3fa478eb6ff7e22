"""Run the MCP conformance suite's SERVER scenarios against a URL and collect per-scenario results.

Two lines of the suite are installed and either can be run (``line=``):

* ``"0.1.16"`` (default): ``.tools/bin/conformance``, 32 server scenarios, ``--suite all``.
* ``"0.2.0"``: ``.tools/bin/conformance-next`` (0.2.0-alpha.12), 65 server scenarios. Besides
  ``--suite all`` it has requirement sets: ``requirements="2026-07-28"`` runs exactly the
  scenarios that spec revision requires, frozen at its release, every one at the 2026-07-28
  wire (plus the ones the set runs but never scores: extensions, pending; see
  ``ScenarioResult.not_scored``).

Library use (from tests)::

    from harness import run_server_scenarios, list_server_scenarios, format_comparison
    results = run_server_scenarios("http://127.0.0.1:8931/mcp")                  # 0.1.16, every scenario
    results = run_server_scenarios(url, line="0.2.0")                            # 0.2.0 --suite all
    results = run_server_scenarios(url, line="0.2.0", requirements="2026-07-28")
    results = run_server_scenarios(url, ["ping", "tools-list"], headers={"Authorization": "Bearer t"})
    failed = {name: r.reason for name, r in results.items() if not r.passed}

Command line::

    python tests/conformance/harness.py --url http://127.0.0.1:8931/mcp
    python tests/conformance/harness.py --start-fixture                      # starts fixture_server.py
    python tests/conformance/harness.py --line 0.2.0 --requirements 2026-07-28 --start-fixture
    python tests/conformance/harness.py --url URL --auth TOKEN --scenario ping --scenario tools-list
    python tests/conformance/harness.py --list [--line 0.2.0 [--requirements 2026-07-28]]

This module is the public entry: ``run_server_scenarios`` and the command line are here, and it
re-exports what tests import. The pieces:

* ``harness_suite.py``: the suite lines (``LINES``, ``SUITE_RUNS``), where their CLIs are
  (``ensure_tools``) and the CLI's environment (extra headers through ``inject_headers.mjs``);
* ``harness_listing.py``: which scenarios a run runs (``list_server_scenarios``, ``requirement_set``);
* ``harness_cli_runner.py``: running the CLI, one process per scenario or one per batch, with
  the watchdog;
* ``harness_results.py``: ``ScenarioResult``, read from the ``checks.json`` the CLI writes per
  scenario (``-o DIR`` -> ``DIR/server-<scenario>-<timestamp>/checks.json``);
* ``harness_tables.py``: ``format_table``, ``format_comparison``, ``summary_line``;
* ``harness_fixture_server.py``: ``running_fixture_server`` (``fixture_server.py`` in a child process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from harness_cli_runner import (
    CLI_TIMEOUT_GRACE_S,
    MAX_CONSECUTIVE_TIMEOUTS,
    Invocation,
    kill_group,
    run_batch,
    run_one,
)
from harness_fixture_server import FIXTURE_SERVER, running_fixture_server
from harness_listing import (
    LIST_LINE,
    RequirementSet,
    list_server_scenarios,
    list_server_scenarios_with_versions,
    requirement_set,
)
from harness_results import ScenarioResult, Status, load_checks, result_from_checks, shorten
from harness_suite import (
    DEFAULT_BIN,
    DEFAULT_LINE,
    HERE,
    INSTALL_SCRIPT,
    LINES,
    NEXT_BIN,
    PRELOAD,
    REPO_ROOT,
    SUITE_RUNS,
    ConformanceToolMissing,
    SuiteLine,
    SuiteRun,
    cli_env,
    conformance_bin,
    ensure_tools,
    suite_line,
)
from harness_tables import format_comparison, format_table, summary_line

__all__ = [
    "CLI_TIMEOUT_GRACE_S",
    "DEFAULT_BIN",
    "DEFAULT_LINE",
    "DEFAULT_TIMEOUT_S",
    "FIXTURE_SERVER",
    "HERE",
    "INSTALL_SCRIPT",
    "LINES",
    "MAX_CONSECUTIVE_TIMEOUTS",
    "NEXT_BIN",
    "PRELOAD",
    "REPO_ROOT",
    "SUITE_RUNS",
    "ConformanceToolMissing",
    "RequirementSet",
    "ScenarioResult",
    "Status",
    "SuiteLine",
    "SuiteRun",
    "conformance_bin",
    "ensure_tools",
    "format_comparison",
    "format_table",
    "list_server_scenarios",
    "list_server_scenarios_with_versions",
    "main",
    "requirement_set",
    "run_server_scenarios",
    "running_fixture_server",
    "summary_line",
]

# The names authorization_harness.py imports from here, under the names they had here before
# the split into harness_*.py.
_LIST_LINE = LIST_LINE
_env = cli_env
_kill_group = kill_group
_load_checks = load_checks
_result_from_checks = result_from_checks
_shorten = shorten

DEFAULT_TIMEOUT_S = 60.0
"""Per-scenario limit. The slowest scenario against a healthy server takes well under 1 s
(0.2.0's ``server-stateless``, about 5 s, is the exception)."""


def run_server_scenarios(
    url: str,
    scenarios: list[str] | None = None,
    *,
    line: str = DEFAULT_LINE,
    requirements: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
    keep_dir: Path | None = None,
) -> dict[str, ScenarioResult]:
    """Run server scenarios against ``url`` and return name -> result, in suite order.

    ``line`` picks the suite's release line (``"0.1.16"`` or ``"0.2.0"``, see ``LINES``).
    ``scenarios=None`` runs the whole selection in one CLI process: ``--suite all`` (every server
    scenario the line lists, active and pending), or with ``requirements="2026-07-28"`` (0.2.0
    only) ``--requirements 2026-07-28``; a list runs those, one CLI process each (with
    ``requirements``, at that revision's wire, as the batch would). ``timeout_s`` bounds each
    scenario (0.2.0: passed to the CLI's ``--timeout``). ``headers`` are added to every request
    the suite sends to ``url``'s origin. ``keep_dir`` keeps the CLI's result directories there
    (default: a temporary dir, removed afterwards).

    Raises ``ValueError`` for an unknown line or scenario, or ``requirements`` on a line without
    requirement sets; ``ConformanceToolMissing`` when the line's CLI is not installed.
    """
    spec = suite_line(line)
    if requirements is not None and not spec.requirement_sets:
        raise ValueError(f"suite line {line} has no requirement sets (use line='0.2.0')")
    invocation = Invocation(conformance_bin(line), spec, requirements, timeout_s)
    not_scored: dict[str, str] = {}
    if requirements is not None:
        required = requirement_set(requirements, line)
        known, not_scored = required.scenarios, required.not_scored
    else:
        known = list_server_scenarios(line)
    if scenarios is None:
        wanted = known
    else:
        unknown = [s for s in scenarios if s not in known]
        if unknown:
            raise ValueError(f"unknown server scenario(s) {unknown}; known: {known}")
        wanted = list(dict.fromkeys(scenarios))
    env = cli_env(url, headers)

    with _result_dir(keep_dir) as out_dir:
        results: dict[str, ScenarioResult] = {}
        remaining = wanted
        gave_up = False
        if scenarios is None:
            results, remaining, gave_up = run_batch(invocation, url, wanted, out_dir, env)
        consecutive_timeouts = MAX_CONSECUTIVE_TIMEOUTS if gave_up else 0
        for name in remaining:
            if consecutive_timeouts >= MAX_CONSECUTIVE_TIMEOUTS:
                results[name] = ScenarioResult(
                    name, "error", reason=f"not run: {consecutive_timeouts} scenarios in a row timed out"
                )
                continue
            scenario_dir = out_dir / name
            scenario_dir.mkdir(parents=True, exist_ok=True)
            results[name] = run_one(invocation, url, name, scenario_dir, env)
            consecutive_timeouts = consecutive_timeouts + 1 if results[name].status == "timeout" else 0
    for name, reason in not_scored.items():
        if name in results:
            results[name].not_scored = reason
    return {name: results[name] for name in wanted}


@contextlib.contextmanager
def _result_dir(keep_dir: Path | None) -> Iterator[Path]:
    if keep_dir is not None:
        keep_dir.mkdir(parents=True, exist_ok=True)
        yield keep_dir.resolve()
        return
    tmp = Path(tempfile.mkdtemp(prefix="bastion-conformance-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run MCP conformance server scenarios and print a table.")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="MCP endpoint, e.g. http://127.0.0.1:8931/mcp")
    target.add_argument("--start-fixture", action="store_true", help="start tests/conformance/fixture_server.py")
    parser.add_argument(
        "--line", choices=list(LINES), default=DEFAULT_LINE, help=f"suite release line (default {DEFAULT_LINE})"
    )
    parser.add_argument(
        "--requirements",
        metavar="REVISION",
        help="run the scenarios this spec revision requires, e.g. 2026-07-28 (0.2.0 only; default --suite all)",
    )
    parser.add_argument("--list", action="store_true", help="list server scenarios and exit")
    parser.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="per-scenario limit in seconds (0.2.0: also the CLI's own --timeout)",
    )
    parser.add_argument("--header", action="append", default=[], metavar="'Name: value'", help="extra header")
    parser.add_argument("--auth", metavar="TOKEN", help="shortcut for --header 'Authorization: Bearer TOKEN'")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the CLI's checks.json files in DIR")
    parser.add_argument("--install", action="store_true", help="run scripts/install-node-tools.sh first")
    args = parser.parse_args(argv)
    if args.requirements and not LINES[args.line].requirement_sets:
        parser.error(f"--requirements needs a line with requirement sets (--line 0.2.0), not {args.line}")

    if args.install:
        ensure_tools(quiet=False, line=args.line)
    if args.list:
        if args.requirements:
            required = requirement_set(args.requirements, args.line)
            for name in required.scenarios:
                reason = required.not_scored.get(name)
                print(f"{name}  [not scored: {reason}]" if reason else name)
            return 0
        for name, versions in list_server_scenarios_with_versions(args.line).items():
            print(f"{name}  [{','.join(versions)}]")
        return 0
    if not args.url and not args.start_fixture:
        parser.error("one of --url or --start-fixture is required")

    headers: dict[str, str] = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            parser.error(f"--header {h!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    if args.auth:
        headers["Authorization"] = args.auth if " " in args.auth else f"Bearer {args.auth}"

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(running_fixture_server()) if args.start_fixture else args.url
        started = time.monotonic()
        results = run_server_scenarios(
            url,
            args.scenario,
            line=args.line,
            requirements=args.requirements,
            timeout_s=args.timeout,
            headers=headers or None,
            keep_dir=args.keep,
        )
        elapsed = time.monotonic() - started

    print(format_table(results, markdown=args.markdown))
    print()
    run = SuiteRun(args.line, args.requirements).label
    print(f"{summary_line(results)}; suite {run}; target {url}; wall time {elapsed:.1f}s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {name: {k: v for k, v in vars(r).items() if k not in ("output",)} for name, r in results.items()},
                indent=2,
            )
        )
    return 0 if all(r.passed for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

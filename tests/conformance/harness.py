"""Run the MCP conformance suite's SERVER scenarios against a URL and collect per-scenario results.

Library use (from tests)::

    from harness import run_server_scenarios, list_server_scenarios
    results = run_server_scenarios("http://127.0.0.1:8931/mcp")                  # every server scenario
    results = run_server_scenarios(url, ["ping", "tools-list"], headers={"Authorization": "Bearer t"})
    failed = {name: r.reason for name, r in results.items() if not r.passed}

Command line::

    python tests/conformance/harness.py --url http://127.0.0.1:8931/mcp
    python tests/conformance/harness.py --start-fixture                      # starts fixture_server.py
    python tests/conformance/harness.py --url URL --auth TOKEN --scenario ping --scenario tools-list
    python tests/conformance/harness.py --list

The suite is the npm package ``@modelcontextprotocol/conformance`` run under Node 22 through the
wrapper ``.tools/bin/conformance`` that ``scripts/install-node-tools.sh`` writes (override the
path with ``BASTION_CONFORMANCE_BIN``). Results are read from the ``checks.json`` file the CLI
writes per scenario (``-o DIR`` -> ``DIR/server-<scenario>-<timestamp>/checks.json``).

Extra request headers (e.g. the gateway's bearer token): the CLI has no option for them, so
``headers=`` runs it with ``NODE_OPTIONS=--import=inject_headers.mjs``, a preload that adds them to
every request to the target origin (both ``fetch`` and npm ``undici.request``); see that file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DEFAULT_BIN = REPO_ROOT / ".tools" / "bin" / "conformance"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-node-tools.sh"
PRELOAD = HERE / "inject_headers.mjs"
FIXTURE_SERVER = HERE / "fixture_server.py"

DEFAULT_TIMEOUT_S = 60.0
"""Per-scenario limit. The slowest scenario against a healthy server takes well under 1 s."""

MAX_CONSECUTIVE_TIMEOUTS = 3
"""After this many scenarios in a row time out, the rest are reported as not run (server dead)."""

Status = Literal["passed", "failed", "timeout", "error"]


@dataclass
class ScenarioResult:
    scenario: str
    status: Status
    reason: str | None = None
    """Short failure reason: the first failing check (``Name: message``), or what went wrong."""
    checks_passed: int = 0
    checks_failed: int = 0
    warnings: list[str] = field(default_factory=list)
    """``Name: message`` of each WARNING check (a scenario with only warnings still passes)."""
    duration_s: float = 0.0
    checks: list[dict[str, Any]] = field(default_factory=list)
    """The raw ``checks.json`` content."""
    output: str = ""
    """The CLI's console output for this scenario (for debugging)."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class ConformanceToolMissing(RuntimeError):
    pass


# --------------------------------------------------------------------------- tool location


def conformance_bin() -> Path:
    path = Path(os.environ.get("BASTION_CONFORMANCE_BIN", str(DEFAULT_BIN)))
    if not path.exists():
        raise ConformanceToolMissing(
            f"{path} not found: run `bash scripts/install-node-tools.sh` (installs Node 22 and the suite)"
        )
    return path


def ensure_tools(*, quiet: bool = True) -> Path:
    """Run the (idempotent, fast when up to date) installer, then return the wrapper path."""
    if "BASTION_CONFORMANCE_BIN" not in os.environ:
        subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            check=True,
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.PIPE if quiet else None,
        )
    return conformance_bin()


def _env(url: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    env["FORCE_COLOR"] = "0"
    for key in ("BASTION_CONFORMANCE_HEADERS", "BASTION_CONFORMANCE_AUTH", "BASTION_CONFORMANCE_ORIGIN"):
        env.pop(key, None)
    if headers:
        parts = urlsplit(url)
        env["BASTION_CONFORMANCE_HEADERS"] = json.dumps(dict(headers))
        env["BASTION_CONFORMANCE_ORIGIN"] = f"{parts.scheme}://{parts.netloc}"
        preload = f"--import={PRELOAD.as_uri()}"
        env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} {preload}".strip()
    return env


# ------------------------------------------------------------------------------- listing

_LIST_LINE = re.compile(r"^\s+-\s+(?P<name>\S+)(?:\s+\[(?P<versions>[^\]]*)\])?\s*$")


def list_server_scenarios_with_versions() -> dict[str, list[str]]:
    """Server scenario name -> spec versions it applies to, in the CLI's order."""
    proc = subprocess.run(
        [str(conformance_bin()), "list", "--server"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env("http://x", None),
    )
    scenarios: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        m = _LIST_LINE.match(line)
        if m:
            versions = m.group("versions")
            scenarios[m.group("name")] = versions.split(",") if versions else []
    if not scenarios:
        raise RuntimeError(f"could not parse `conformance list --server` output:\n{proc.stdout}")
    return scenarios


def list_server_scenarios() -> list[str]:
    """All server scenarios the installed suite knows (active and pending)."""
    return list(list_server_scenarios_with_versions())


# ------------------------------------------------------------------------------- parsing


def _check_label(check: Mapping[str, Any]) -> str:
    name = check.get("name") or check.get("id") or "check"
    msg = check.get("errorMessage") or check.get("description") or ""
    return f"{name}: {msg}" if msg else str(name)


def _shorten(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _result_from_checks(
    scenario: str, checks: list[dict[str, Any]], duration_s: float, output: str
) -> ScenarioResult:
    failures = [c for c in checks if c.get("status") == "FAILURE"]
    successes = [c for c in checks if c.get("status") == "SUCCESS"]
    warnings = [_shorten(_check_label(c)) for c in checks if c.get("status") == "WARNING"]
    return ScenarioResult(
        scenario=scenario,
        status="failed" if failures else "passed",
        reason=_shorten(_check_label(failures[0])) if failures else None,
        checks_passed=len(successes),
        checks_failed=len(failures),
        warnings=warnings,
        duration_s=duration_s,
        checks=checks,
        output=output,
    )


def _find_checks(out_dir: Path, scenario: str) -> Path | None:
    # The CLI names result dirs "server-<scenario>-<ISO timestamp with : and . as ->".
    stamp = re.compile(re.escape(f"server-{scenario}-") + r"\d{4}-\d{2}-\d{2}T[\d-]+Z$")
    matches = sorted(p for p in out_dir.iterdir() if p.is_dir() and stamp.match(p.name))
    if not matches:
        return None
    checks = matches[-1] / "checks.json"
    return checks if checks.exists() else None


def _load_checks(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of checks")
    return data


# ------------------------------------------------------------------------------- running


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)


def _run_one(
    binary: Path, url: str, scenario: str, out_dir: Path, env: dict[str, str], timeout_s: float
) -> ScenarioResult:
    cmd = [str(binary), "server", "--url", url, "--scenario", scenario, "-o", str(out_dir)]
    start = time.monotonic()
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=out_dir,
        start_new_session=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            output, _ = proc.communicate()
            return ScenarioResult(
                scenario,
                "timeout",
                reason=f"no result within {timeout_s:g} s (CLI killed)",
                duration_s=time.monotonic() - start,
                output=output or "",
            )
    duration = time.monotonic() - start
    checks_path = _find_checks(out_dir, scenario)
    if checks_path is None:
        tail = _shorten(" | ".join(output.strip().splitlines()[-3:]))
        return ScenarioResult(
            scenario,
            "error",
            reason=f"CLI exited {proc.returncode} without checks.json: {tail}",
            duration_s=duration,
            output=output,
        )
    result = _result_from_checks(scenario, _load_checks(checks_path), duration, output)
    if proc.returncode not in (0, 1) or (proc.returncode == 1) != (result.status == "failed"):
        # Exit status disagrees with checks.json (exit 1 <=> a FAILURE check): trust neither.
        result.status = "error"
        result.reason = _shorten(
            f"CLI exit {proc.returncode} disagrees with checks.json; {result.reason or ''}"
        )
    return result


_SCENARIO_START = re.compile(r"^=== Running scenario: (?P<name>\S+) ===$")


def _run_batch(
    binary: Path, url: str, wanted: Sequence[str], out_dir: Path, env: dict[str, str], timeout_s: float
) -> tuple[dict[str, ScenarioResult], list[str]]:
    """Run ``--suite all`` in one process (about 10x faster than one process per scenario).

    A watchdog kills the CLI when one scenario runs longer than ``timeout_s``; that scenario is
    reported as a timeout and the ones it had not reached are returned for running one by one.
    """
    cmd = [str(binary), "server", "--url", url, "--suite", "all", "-o", str(out_dir)]
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=out_dir,
        start_new_session=True,
    ) as proc:
        order, chunks, started, ended, hung = _follow_batch(proc, timeout_s)

    results: dict[str, ScenarioResult] = {}
    for name in order:
        if name not in wanted:
            continue
        duration = ended.get(name, time.monotonic()) - started[name]
        output = "".join(chunks.get(name, []))
        if name == hung:
            results[name] = ScenarioResult(
                name,
                "timeout",
                reason=f"no progress for {timeout_s:g} s (CLI killed)",
                duration_s=duration,
                output=output,
            )
            continue
        checks_path = _find_checks(out_dir, name)
        if checks_path is not None:
            results[name] = _result_from_checks(name, _load_checks(checks_path), duration, output)
        elif hung is None:
            results[name] = ScenarioResult(
                name,
                "error",
                reason=_shorten(f"no checks.json: {output.strip()[-200:]}"),
                duration_s=duration,
                output=output,
            )
    remaining = [s for s in wanted if s not in results]
    return results, remaining


def _follow_batch(
    proc: subprocess.Popen[str], timeout_s: float
) -> tuple[list[str], dict[str, list[str]], dict[str, float], dict[str, float], str | None]:
    """Split the batch CLI's output per scenario; kill it when one scenario stalls."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    order: list[str] = []
    chunks: dict[str, list[str]] = {}
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    current: str | None = None
    hung: str | None = None
    while True:
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            hung = current or "(startup)"
            _kill_group(proc)
            break
        if line is None:
            break
        now = time.monotonic()
        m = _SCENARIO_START.match(line.strip())
        if m:
            if current is not None:
                ended[current] = now
            current = m.group("name")
            order.append(current)
            started[current] = now
            chunks[current] = []
        elif current is not None:
            if line.startswith("=== SUMMARY"):
                ended[current] = now
                current = None
            else:
                chunks[current].append(line)
    proc.wait()
    reader.join(timeout=10)  # EOF follows the kill; the pipe is closed only after this
    if current is not None and current not in ended:
        ended[current] = time.monotonic()
    return order, chunks, started, ended, hung


def run_server_scenarios(
    url: str,
    scenarios: list[str] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
    keep_dir: Path | None = None,
) -> dict[str, ScenarioResult]:
    """Run server scenarios against ``url`` and return name -> result, in suite order.

    ``scenarios=None`` runs every server scenario the suite lists (active and pending) in one
    CLI process; a list runs those, one CLI process each. ``timeout_s`` bounds each scenario.
    ``headers`` are added to every request the suite sends to ``url``'s origin. ``keep_dir``
    keeps the CLI's result directories there (default: a temporary dir, removed afterwards).
    """
    binary = conformance_bin()
    known = list_server_scenarios()
    if scenarios is None:
        wanted = known
    else:
        unknown = [s for s in scenarios if s not in known]
        if unknown:
            raise ValueError(f"unknown server scenario(s) {unknown}; known: {known}")
        wanted = list(dict.fromkeys(scenarios))
    env = _env(url, headers)

    with _result_dir(keep_dir) as out_dir:
        results: dict[str, ScenarioResult] = {}
        remaining = wanted
        if scenarios is None:
            results, remaining = _run_batch(binary, url, wanted, out_dir, env, timeout_s)
        consecutive_timeouts = 0
        for name in remaining:
            if consecutive_timeouts >= MAX_CONSECUTIVE_TIMEOUTS:
                results[name] = ScenarioResult(
                    name, "error", reason=f"not run: {consecutive_timeouts} scenarios in a row timed out"
                )
                continue
            scenario_dir = out_dir / name
            scenario_dir.mkdir(parents=True, exist_ok=True)
            results[name] = _run_one(binary, url, name, scenario_dir, env, timeout_s)
            consecutive_timeouts = consecutive_timeouts + 1 if results[name].status == "timeout" else 0
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


# ----------------------------------------------------------------------- fixture server


@contextlib.contextmanager
def running_fixture_server(*extra_args: str, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """Start ``fixture_server.py --port 0`` and yield its MCP URL; stop it on exit.

    The server's stderr goes to a temporary file (a pipe nobody reads could fill and block it);
    it is included in the error when the server does not start.
    """
    with (
        tempfile.TemporaryFile(mode="w+") as errfile,
        subprocess.Popen(
            [sys.executable, str(FIXTURE_SERVER), "--port", "0", *extra_args],
            stdout=subprocess.PIPE,
            stderr=errfile,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        ) as proc,
    ):
        url, reader = _await_ready(proc, startup_timeout_s)
        try:
            if url is None:
                errfile.seek(0)
                raise RuntimeError(f"fixture server did not start: {errfile.read()[-2000:]}")
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
            reader.join(timeout=10)  # stdout hits EOF once the server is gone


def _await_ready(proc: subprocess.Popen[str], timeout_s: float) -> tuple[str | None, threading.Thread]:
    """Wait for the ``READY <url>`` line; keep draining stdout afterwards so it never blocks."""
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # stdout closed at shutdown
            for line in proc.stdout:
                if line.startswith("READY "):
                    found.put(line.split(None, 1)[1].strip())
        found.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        return found.get(timeout=timeout_s), reader
    except queue.Empty:
        return None, reader


# ---------------------------------------------------------------------------------- CLI


def format_table(results: Mapping[str, ScenarioResult], *, markdown: bool = False) -> str:
    rows = []
    for r in results.values():
        mark = {"passed": "PASS", "failed": "FAIL", "timeout": "TIMEOUT", "error": "ERROR"}[r.status]
        if r.passed and r.warnings:
            mark += f" ({len(r.warnings)} warn)"
        checks = f"{r.checks_passed}/{r.checks_passed + r.checks_failed}"
        note = r.reason or ("; ".join(r.warnings) if r.warnings else "")
        rows.append((r.scenario, mark, checks, f"{r.duration_s:.2f}s", note))
    if markdown:
        out = ["| scenario | direct | checks | time | note |", "| --- | --- | --- | --- | --- |"]
        out += [f"| `{a}` | {b} | {c} | {d} | {e.replace('|', '/')} |" for a, b, c, d, e in rows]
        return "\n".join(out)
    widths = [
        max(len(row[i]) for row in [("scenario", "result", "checks", "time", ""), *rows]) for i in range(4)
    ]
    head = ("scenario", "result", "checks", "time", "note")
    lines = ["  ".join(h.ljust(w) for h, w in zip(head[:4], widths, strict=True)) + "  note"]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row[:4], widths, strict=True)) + f"  {row[4]}" for row in rows
    ]
    return "\n".join(lines)


def summary_line(results: Mapping[str, ScenarioResult]) -> str:
    # Worded so CI log scrapers do not mistake it for a test runner's "N passed, N failed" line.
    ok = sum(r.passed for r in results.values())
    return f"conformance scenarios OK: {ok} of {len(results)} (not OK: {len(results) - ok})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run MCP conformance server scenarios and print a table.")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="MCP endpoint, e.g. http://127.0.0.1:8931/mcp")
    target.add_argument(
        "--start-fixture", action="store_true", help="start tests/conformance/fixture_server.py"
    )
    parser.add_argument("--list", action="store_true", help="list server scenarios and exit")
    parser.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per-scenario limit in seconds"
    )
    parser.add_argument("--header", action="append", default=[], metavar="'Name: value'", help="extra header")
    parser.add_argument("--auth", metavar="TOKEN", help="shortcut for --header 'Authorization: Bearer TOKEN'")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the CLI's checks.json files in DIR")
    parser.add_argument("--install", action="store_true", help="run scripts/install-node-tools.sh first")
    args = parser.parse_args(argv)

    if args.install:
        ensure_tools(quiet=False)
    if args.list:
        for name, versions in list_server_scenarios_with_versions().items():
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
            url, args.scenario, timeout_s=args.timeout, headers=headers or None, keep_dir=args.keep
        )
        elapsed = time.monotonic() - started

    print(format_table(results, markdown=args.markdown))
    print()
    print(f"{summary_line(results)}; target {url}; wall time {elapsed:.1f}s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    name: {k: v for k, v in vars(r).items() if k not in ("output",)}
                    for name, r in results.items()
                },
                indent=2,
            )
        )
    return 0 if all(r.passed for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

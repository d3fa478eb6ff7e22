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

The suite is the npm package ``@modelcontextprotocol/conformance`` run under Node 22 through the
wrappers that ``scripts/install-node-tools.sh`` writes (override a line's path with
``BASTION_CONFORMANCE_BIN`` / ``BASTION_CONFORMANCE_NEXT_BIN``). Results are read from the
``checks.json`` file the CLI writes per scenario
(``-o DIR`` -> ``DIR/server-<scenario>-<timestamp>/checks.json``).

Extra request headers (e.g. the gateway's bearer token): the CLI has no option for them, so
``headers=`` runs it with ``NODE_OPTIONS=--import=inject_headers.mjs``, a preload that adds them to
every request to the target origin (``fetch``, npm ``undici.request`` and ``node:http(s)``
``request``/``get``); see that file.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
NEXT_BIN = REPO_ROOT / ".tools" / "bin" / "conformance-next"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-node-tools.sh"
PRELOAD = HERE / "inject_headers.mjs"
FIXTURE_SERVER = HERE / "fixture_server.py"

DEFAULT_TIMEOUT_S = 60.0
"""Per-scenario limit. The slowest scenario against a healthy server takes well under 1 s
(0.2.0's ``server-stateless``, about 5 s, is the exception)."""

CLI_TIMEOUT_GRACE_S = 15.0
"""A line whose CLI enforces the per-scenario limit itself gets this much longer before the
harness's watchdog kills it (the CLI's own timeout should always fire first)."""

MAX_CONSECUTIVE_TIMEOUTS = 3
"""After this many scenarios in a row time out, the rest are reported as not run (server dead)."""

_CLI_TIMEOUT_CHECK = "scenario-timeout"
"""Check id the 0.2.0 CLI reports when a scenario overruns ``--timeout``."""

Status = Literal["passed", "failed", "timeout", "error"]


@dataclass(frozen=True)
class SuiteLine:
    """One installed release line of the conformance CLI and what its ``server`` command offers."""

    name: str
    """``"0.1.16"`` or ``"0.2.0"``: the value of ``line=`` / ``--line``."""
    default_bin: Path
    bin_env: str
    """Environment variable that overrides ``default_bin``."""
    cli_timeout: bool
    """``server --timeout <ms>`` exists: the CLI bounds each scenario itself (check ``scenario-timeout``)."""
    requirement_sets: bool
    """``server --requirements <revision>`` and ``list --requirements`` exist."""


LINES: dict[str, SuiteLine] = {
    "0.1.16": SuiteLine("0.1.16", DEFAULT_BIN, "BASTION_CONFORMANCE_BIN", cli_timeout=False, requirement_sets=False),
    "0.2.0": SuiteLine("0.2.0", NEXT_BIN, "BASTION_CONFORMANCE_NEXT_BIN", cli_timeout=True, requirement_sets=True),
}
DEFAULT_LINE = "0.1.16"


@dataclass(frozen=True)
class SuiteRun:
    """A line and a selection: ``--suite all`` (``requirements=None``) or ``--requirements <revision>``."""

    line: str = DEFAULT_LINE
    requirements: str | None = None

    @property
    def label(self) -> str:
        selection = f"--requirements {self.requirements}" if self.requirements else "--suite all"
        return f"{self.line} {selection}"


SUITE_RUNS = (SuiteRun("0.1.16"), SuiteRun("0.2.0"), SuiteRun("0.2.0", "2026-07-28"))
"""The runs ``make test`` makes (tests/conformance/test_conformance_*.py)."""


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
    skipped: list[str] = field(default_factory=list)
    """``Name: message`` of each SKIPPED check (the suite itself did not exercise it; still a pass)."""
    not_scored: str | None = None
    """Why the requirement set runs this scenario without scoring it (``extension``, ``pending``,
    ...); ``None`` when it is scored or the run had no requirement set."""
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


def _suite_line(line: str) -> SuiteLine:
    try:
        return LINES[line]
    except KeyError:
        raise ValueError(f"unknown conformance suite line {line!r}; known: {list(LINES)}") from None


def conformance_bin(line: str = DEFAULT_LINE) -> Path:
    """Path of ``line``'s CLI wrapper; raises ``ConformanceToolMissing`` when it is not installed."""
    spec = _suite_line(line)
    path = Path(os.environ.get(spec.bin_env, str(spec.default_bin)))
    if not path.exists():
        raise ConformanceToolMissing(
            f"{path} not found: run `bash scripts/install-node-tools.sh` (installs Node 22 and the suite)"
        )
    return path


def ensure_tools(*, quiet: bool = True, line: str = DEFAULT_LINE) -> Path:
    """Run the (idempotent, fast when up to date) installer, check every line's CLI is there,
    then return ``line``'s wrapper path. The installer is skipped when every line's path is
    overridden by its environment variable."""
    if any(spec.bin_env not in os.environ for spec in LINES.values()):
        subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            check=True,
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.PIPE if quiet else None,
        )
    for name in LINES:
        conformance_bin(name)
    return conformance_bin(line)


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
_NOT_SCORED_GROUP = re.compile(r"^\s+(?P<reason>\S+) \(\d+\):\s*$")


@dataclass(frozen=True)
class RequirementSet:
    """The server scenarios a requirement set runs (``conformance list --requirements REV``)."""

    revision: str
    scored: list[str]
    """Scenarios the revision requires (they decide the CLI's exit status), in run order."""
    not_scored: dict[str, str]
    """Scenarios run and reported but never scored -> why (``extension``, ``pending``, ...)."""

    @property
    def scenarios(self) -> list[str]:
        """Everything the run runs, in its order: the scored ones, then the others."""
        return [*self.scored, *self.not_scored]


@functools.lru_cache(maxsize=16)
def _list_output(binary: str, args: tuple[str, ...]) -> str:
    proc = subprocess.run(
        [binary, "list", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env("http://x", None),
    )
    return proc.stdout


def list_server_scenarios_with_versions(line: str = DEFAULT_LINE) -> dict[str, list[str]]:
    """Server scenario name -> spec versions it applies to (``extension`` for extensions), in the CLI's order."""
    stdout = _list_output(str(conformance_bin(line)), ("--server",))
    scenarios: dict[str, list[str]] = {}
    for text in stdout.splitlines():
        m = _LIST_LINE.match(text)
        if m:
            versions = m.group("versions")
            scenarios[m.group("name")] = versions.split(",") if versions else []
    if not scenarios:
        raise RuntimeError(f"could not parse `conformance list --server` output:\n{stdout}")
    return scenarios


def requirement_set(revision: str, line: str = "0.2.0") -> RequirementSet:
    """Parse ``conformance list --requirements REVISION``'s server part.

    The output has a ``Server scenarios ...:`` section (``  - name``), a client section, and
    ``Run and reported, but never scored:`` with groups ``  reason (n):`` of ``    - name [leg]``.
    """
    if not _suite_line(line).requirement_sets:
        raise ValueError(f"suite line {line} has no requirement sets (use line='0.2.0')")
    stdout = _list_output(str(conformance_bin(line)), ("--requirements", revision))
    scored: list[str] = []
    not_scored: dict[str, str] = {}
    section = reason = ""
    for text in stdout.splitlines():
        if not text.strip():
            continue
        if not text.startswith(" "):
            section = text
            continue
        m = _LIST_LINE.match(text)
        if m is None:
            group = _NOT_SCORED_GROUP.match(text)
            reason = group.group("reason") if group else reason
        elif section.startswith("Server scenarios"):
            scored.append(m.group("name"))
        elif section.startswith("Run and reported") and m.group("versions") == "server":
            not_scored[m.group("name")] = reason
    if not scored:
        raise RuntimeError(f"could not parse `conformance list --requirements {revision}` output:\n{stdout}")
    return RequirementSet(revision, scored, not_scored)


def list_server_scenarios(line: str = DEFAULT_LINE, requirements: str | None = None) -> list[str]:
    """The server scenarios a run would run: all the line knows (active and pending), or,
    with ``requirements``, those the requirement set runs (scored and not scored)."""
    if requirements is not None:
        return requirement_set(requirements, line).scenarios
    return list(list_server_scenarios_with_versions(line))


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
    skipped = [_shorten(_check_label(c)) for c in checks if c.get("status") == "SKIPPED"]
    # The 0.2.0 CLI reports its own per-scenario timeout as a failing check.
    timed_out = [c for c in failures if c.get("id") == _CLI_TIMEOUT_CHECK]
    first = (timed_out or failures)[:1]
    return ScenarioResult(
        scenario=scenario,
        status="timeout" if timed_out else "failed" if failures else "passed",
        reason=_shorten(_check_label(first[0])) if first else None,
        checks_passed=len(successes),
        checks_failed=len(failures),
        warnings=warnings,
        skipped=skipped,
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


@dataclass(frozen=True)
class _Invocation:
    """How to call one line's ``server`` command for one run."""

    binary: Path
    spec: SuiteLine
    requirements: str | None
    timeout_s: float

    def _limit(self) -> list[str]:
        return ["--timeout", str(max(1, round(self.timeout_s * 1000)))] if self.spec.cli_timeout else []

    def batch(self, url: str, out_dir: Path) -> list[str]:
        selection = ["--requirements", self.requirements] if self.requirements else ["--suite", "all"]
        return [str(self.binary), "server", "--url", url, *selection, "-o", str(out_dir), *self._limit()]

    def single(self, url: str, scenario: str, out_dir: Path) -> list[str]:
        # `--requirements` cannot be combined with `--scenario`; the batch runs each scenario of
        # a requirement set at the revision's wire even when it predates it, which is what
        # `--spec-version REV --force` does for one scenario.
        wire = ["--spec-version", self.requirements, "--force"] if self.requirements else []
        cmd = [str(self.binary), "server", "--url", url, "--scenario", scenario, *wire]
        return [*cmd, "-o", str(out_dir), *self._limit()]

    @property
    def watchdog_s(self) -> float:
        return self.timeout_s + CLI_TIMEOUT_GRACE_S if self.spec.cli_timeout else self.timeout_s


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)


def _run_one(
    invocation: _Invocation, url: str, scenario: str, out_dir: Path, env: dict[str, str]
) -> ScenarioResult:
    cmd = invocation.single(url, scenario, out_dir)
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
            output, _ = proc.communicate(timeout=invocation.watchdog_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            output, _ = proc.communicate()
            return ScenarioResult(
                scenario,
                "timeout",
                reason=f"no result within {invocation.watchdog_s:g} s (CLI killed)",
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
    failed = result.status in ("failed", "timeout")
    if proc.returncode not in (0, 1) or (proc.returncode == 1) != failed:
        # Exit status disagrees with checks.json (exit 1 <=> a FAILURE check): trust neither.
        result.status = "error"
        result.reason = _shorten(
            f"CLI exit {proc.returncode} disagrees with checks.json; {result.reason or ''}"
        )
    return result


_SCENARIO_START = re.compile(r"^=== Running scenario: (?P<name>\S+) ===$")


def _run_batch(
    invocation: _Invocation, url: str, wanted: Sequence[str], out_dir: Path, env: dict[str, str]
) -> tuple[dict[str, ScenarioResult], list[str], bool]:
    """Run the whole selection in one process (about 10x faster than one process per scenario).

    A watchdog kills the CLI when one scenario runs longer than the invocation's watchdog; that
    scenario is reported as a timeout and the ones it had not reached are returned for running
    one by one (the third value is True when the batch gave up on a dead server: do not run
    them). What the CLI prints after ``=== SUMMARY ===`` (the summary and, with
    ``--requirements``, "Not scored for ...") is not needed: each scenario's checks.json is read.
    """
    cmd = invocation.batch(url, out_dir)
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
        progress = _follow_batch(proc, invocation.watchdog_s)

    results: dict[str, ScenarioResult] = {}
    for name in progress.order:
        if name not in wanted:
            continue
        duration = progress.ended.get(name, time.monotonic()) - progress.started[name]
        output = "".join(progress.chunks.get(name, []))
        if name == progress.hung:
            results[name] = ScenarioResult(
                name,
                "timeout",
                reason=f"no progress for {invocation.watchdog_s:g} s (CLI killed)",
                duration_s=duration,
                output=output,
            )
            continue
        checks_path = _find_checks(out_dir, name)
        if checks_path is not None:
            results[name] = _result_from_checks(name, _load_checks(checks_path), duration, output)
        elif progress.hung is None and not progress.gave_up:
            results[name] = ScenarioResult(
                name,
                "error",
                reason=_shorten(f"no checks.json: {output.strip()[-200:]}"),
                duration_s=duration,
                output=output,
            )
    remaining = [s for s in wanted if s not in results]
    return results, remaining, progress.gave_up


_CLI_TIMED_OUT = re.compile(r"^Scenario timed out after \d+ms")
"""What the 0.2.0 CLI prints when it gives up on a scenario (then it goes on to the next)."""


@dataclass
class _BatchProgress:
    order: list[str] = field(default_factory=list)
    """Scenarios in the order the CLI started them."""
    chunks: dict[str, list[str]] = field(default_factory=dict)
    """Each scenario's output lines."""
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    hung: str | None = None
    """The scenario that printed nothing for the watchdog's limit (the CLI was killed)."""
    gave_up: bool = False
    """``MAX_CONSECUTIVE_TIMEOUTS`` scenarios in a row hit the CLI's own timeout (CLI killed)."""


def _follow_batch(proc: subprocess.Popen[str], timeout_s: float) -> _BatchProgress:
    """Split the batch CLI's output per scenario; kill it when one scenario stalls, or when the
    CLI's own per-scenario timeout (0.2.0) has fired for ``MAX_CONSECUTIVE_TIMEOUTS`` scenarios
    in a row (the server is dead; without this the run would take that timeout per scenario)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    p = _BatchProgress()
    current: str | None = None
    timeouts_in_a_row = 0
    while True:
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            p.hung = current or "(startup)"
            _kill_group(proc)
            break
        if line is None:
            break
        now = time.monotonic()
        m = _SCENARIO_START.match(line.strip())
        if m:
            if current is not None:
                p.ended[current] = now
                timed_out = any(_CLI_TIMED_OUT.match(text.strip()) for text in p.chunks[current])
                timeouts_in_a_row = timeouts_in_a_row + 1 if timed_out else 0
                if timeouts_in_a_row >= MAX_CONSECUTIVE_TIMEOUTS:
                    p.gave_up = True
                    current = None
                    _kill_group(proc)
                    break
            current = m.group("name")
            p.order.append(current)
            p.started[current] = now
            p.chunks[current] = []
        elif current is not None:
            if line.startswith("=== SUMMARY"):
                p.ended[current] = now
                current = None
            else:
                p.chunks[current].append(line)
    proc.wait()
    reader.join(timeout=10)  # EOF follows the kill; the pipe is closed only after this
    if current is not None and current not in p.ended:
        p.ended[current] = time.monotonic()
    return p


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
    spec = _suite_line(line)
    if requirements is not None and not spec.requirement_sets:
        raise ValueError(f"suite line {line} has no requirement sets (use line='0.2.0')")
    invocation = _Invocation(conformance_bin(line), spec, requirements, timeout_s)
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
    env = _env(url, headers)

    with _result_dir(keep_dir) as out_dir:
        results: dict[str, ScenarioResult] = {}
        remaining = wanted
        gave_up = False
        if scenarios is None:
            results, remaining, gave_up = _run_batch(invocation, url, wanted, out_dir, env)
        consecutive_timeouts = MAX_CONSECUTIVE_TIMEOUTS if gave_up else 0
        for name in remaining:
            if consecutive_timeouts >= MAX_CONSECUTIVE_TIMEOUTS:
                results[name] = ScenarioResult(
                    name, "error", reason=f"not run: {consecutive_timeouts} scenarios in a row timed out"
                )
                continue
            scenario_dir = out_dir / name
            scenario_dir.mkdir(parents=True, exist_ok=True)
            results[name] = _run_one(invocation, url, name, scenario_dir, env)
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

_MARKS: dict[Status, str] = {"passed": "PASS", "failed": "FAIL", "timeout": "TIMEOUT", "error": "ERROR"}


def _mark(r: ScenarioResult) -> str:
    mark = _MARKS[r.status]
    if r.passed and r.skipped and not r.checks_passed:
        mark += " (skipped)"
    elif r.passed and r.warnings:
        mark += f" ({len(r.warnings)} warn)"
    return mark


def _note(r: ScenarioResult) -> str:
    note = r.reason or "; ".join(r.warnings or r.skipped)
    return f"not scored ({r.not_scored}); {note}" if r.not_scored else note


def format_table(results: Mapping[str, ScenarioResult], *, markdown: bool = False) -> str:
    rows = []
    for r in results.values():
        checks = f"{r.checks_passed}/{r.checks_passed + r.checks_failed}"
        rows.append((r.scenario, _mark(r), checks, f"{r.duration_s:.2f}s", _note(r)))
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


def format_comparison(
    direct: Mapping[str, ScenarioResult],
    through: Mapping[str, ScenarioResult],
    *,
    through_label: str = "through Bastion",
) -> str:
    """Markdown table ``scenario | direct | through Bastion`` of two runs of the same selection.

    Each cell is the result and its checks (``PASS 4/4``, ``FAIL 11/14: <first failure>``);
    a scenario that passes directly but not through Bastion is marked **regression**;
    ``not scored (reason)`` follows the name of a scenario its requirement set does not score.
    Scenarios are in ``direct``'s order, then any only ``through`` has.
    """

    def cell(r: ScenarioResult | None) -> str:
        if r is None:
            return "not run"
        text = f"{_mark(r)} {r.checks_passed}/{r.checks_passed + r.checks_failed}"
        if r.reason:
            text += f": {_shorten(r.reason, 120)}"
        return text.replace("|", "/")

    out = [f"| scenario | direct | {through_label} |", "| --- | --- | --- |"]
    for name in [*direct, *(n for n in through if n not in direct)]:
        d, t = direct.get(name), through.get(name)
        label = f"`{name}`"
        not_scored = (d.not_scored if d else None) or (t.not_scored if t else None)
        if not_scored:
            label += f" (not scored: {not_scored})"
        regression = d is not None and d.passed and (t is None or not t.passed)
        out.append(f"| {label} | {cell(d)} | {'**regression** ' if regression else ''}{cell(t)} |")
    ok_d = sum(r.passed for r in direct.values())
    ok_t = sum(r.passed for r in through.values())
    out.append(f"| **passed** | **{ok_d} of {len(direct)}** | **{ok_t} of {len(through)}** |")
    return "\n".join(out)


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

"""Running the conformance CLI's ``server`` command: one process per scenario, or one per batch.

* ``run_one``: ``server --scenario NAME`` (with a requirement set, ``--spec-version REV --force``,
  the wire the batch would use); a watchdog kills the CLI after ``Invocation.watchdog_s``.
* ``run_batch``: ``server --suite all`` or ``server --requirements REV`` in one process (about 10x
  faster); the console output is split per scenario at ``=== Running scenario: NAME ===``. A
  scenario that prints nothing for the watchdog's limit is a timeout (the CLI is killed and the
  scenarios it had not reached are left for ``run_one``); after ``MAX_CONSECUTIVE_TIMEOUTS``
  scenarios in a row hit the 0.2.0 CLI's own ``--timeout`` the server is taken for dead and the
  batch gives up.

Every CLI runs in its own session (process group) so a kill takes its Node children too. The
exit status is cross-checked against ``checks.json`` (exit 1 <=> a failing check). No MCP SDK
here: the scenarios are the suite's.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness_results import ScenarioResult, find_checks, load_checks, result_from_checks, shorten
from harness_suite import SuiteLine

CLI_TIMEOUT_GRACE_S = 15.0
"""A line whose CLI enforces the per-scenario limit itself gets this much longer before the
harness's watchdog kills it (the CLI's own timeout should always fire first)."""

MAX_CONSECUTIVE_TIMEOUTS = 3
"""After this many scenarios in a row time out, the rest are reported as not run (server dead)."""

_SCENARIO_START = re.compile(r"^=== Running scenario: (?P<name>\S+) ===$")

_CLI_TIMED_OUT = re.compile(r"^Scenario timed out after \d+ms")
"""What the 0.2.0 CLI prints when it gives up on a scenario (then it goes on to the next)."""


@dataclass(frozen=True)
class Invocation:
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


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group of ``proc`` (started with ``start_new_session=True``) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)


def _start(cmd: Sequence[str], out_dir: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """The CLI started in its own process group (so a watchdog can kill it whole), output merged."""
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=out_dir,
        start_new_session=True,
    )


def run_one(invocation: Invocation, url: str, scenario: str, out_dir: Path, env: dict[str, str]) -> ScenarioResult:
    """Run ``scenario`` alone in its own CLI process, writing its results under ``out_dir``."""
    cmd = invocation.single(url, scenario, out_dir)
    start = time.monotonic()
    with _start(cmd, out_dir, env) as proc:
        try:
            output, _ = proc.communicate(timeout=invocation.watchdog_s)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            output, _ = proc.communicate()
            return ScenarioResult(
                scenario,
                "timeout",
                reason=f"no result within {invocation.watchdog_s:g} s (CLI killed)",
                duration_s=time.monotonic() - start,
                output=output or "",
            )
    duration = time.monotonic() - start
    checks_path = find_checks(out_dir, scenario)
    if checks_path is None:
        tail = shorten(" | ".join(output.strip().splitlines()[-3:]))
        return ScenarioResult(
            scenario,
            "error",
            reason=f"CLI exited {proc.returncode} without checks.json: {tail}",
            duration_s=duration,
            output=output,
        )
    result = result_from_checks(scenario, load_checks(checks_path), duration, output)
    failed = result.status in ("failed", "timeout")
    if proc.returncode not in (0, 1) or (proc.returncode == 1) != failed:
        # Exit status disagrees with checks.json (exit 1 <=> a FAILURE check): trust neither.
        result.status = "error"
        result.reason = shorten(f"CLI exit {proc.returncode} disagrees with checks.json; {result.reason or ''}")
    return result


def run_batch(
    invocation: Invocation, url: str, wanted: Sequence[str], out_dir: Path, env: dict[str, str]
) -> tuple[dict[str, ScenarioResult], list[str], bool]:
    """Run the whole selection in one process (about 10x faster than one process per scenario).

    A watchdog kills the CLI when one scenario runs longer than the invocation's watchdog; that
    scenario is reported as a timeout and the ones it had not reached are returned for running
    one by one (the third value is True when the batch gave up on a dead server: do not run
    them). What the CLI prints after ``=== SUMMARY ===`` (the summary and, with
    ``--requirements``, "Not scored for ...") is not needed: each scenario's checks.json is read.
    """
    cmd = invocation.batch(url, out_dir)
    with _start(cmd, out_dir, env) as proc:
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
        checks_path = find_checks(out_dir, name)
        if checks_path is not None:
            results[name] = result_from_checks(name, load_checks(checks_path), duration, output)
        elif progress.hung is None and not progress.gave_up:
            results[name] = ScenarioResult(
                name,
                "error",
                reason=shorten(f"no checks.json: {output.strip()[-200:]}"),
                duration_s=duration,
                output=output,
            )
    remaining = [s for s in wanted if s not in results]
    return results, remaining, progress.gave_up


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
            kill_group(proc)
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
                    kill_group(proc)
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

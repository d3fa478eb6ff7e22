"""Run the MCP conformance suite's AUTHORIZATION SERVER scenarios against an issuer.

    conformance authorization --url ISSUER --client-id ID [--resource URI] -p PORT -o DIR

The ``authorization`` command exists from ``@modelcontextprotocol/conformance`` 0.2.0-alpha on;
0.1.16 (npm ``latest``, which runs the server scenarios) has none, so
``scripts/install-node-tools.sh`` also installs 0.2.0-alpha.12 as ``.tools/bin/conformance-next``.
The CLI is found as ``$BASTION_CONFORMANCE_AUTHZ_BIN`` or else that wrapper, and used only if
``conformance list --authorization`` works (``authorization_cli``).

The suite plays an OAuth client against the issuer. It runs its scenarios in one process, in
order, and hands the metadata the first one fetched to the second (so the code grant cannot run
alone: ``--scenario authorization-code-grant`` always fails). It does not open a browser: it
prints the authorization URL and waits up to 5 minutes for a request to
``http://127.0.0.1:PORT/callback``. ``run_authorization_suite`` plays the person at the browser:
``sign_in(url)`` opens the URL, signs in and consents, and returns where the authorization
server redirected the browser; the harness then follows that redirect to the suite's callback.

Results are read from ``DIR/authorization-server-<scenario>-<timestamp>/checks.json``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from harness import (
    _LIST_LINE,
    REPO_ROOT,
    ScenarioResult,
    _env,
    _kill_group,
    _load_checks,
    _result_from_checks,
    _shorten,
)

AUTHZ_BIN_ENV = "BASTION_CONFORMANCE_AUTHZ_BIN"
DEFAULT_BIN = REPO_ROOT / ".tools" / "bin" / "conformance-next"
DEFAULT_TIMEOUT_S = 60.0
"""Limit for the whole run; against a healthy loopback issuer it takes under 1 s."""

_AUTHORIZATION_URL = re.compile(r"^https?://\S+\?\S*\bresponse_type=code\b\S*$")
_SCENARIO_START = re.compile(r"^=== Running scenario: (?P<name>\S+) ===$")

SignIn = Callable[[str], str]
"""Opens an authorization URL as a person would; returns the URL the browser was redirected to."""


class AuthorizationCommandMissing(RuntimeError):
    """The conformance CLI found has no ``authorization`` command (older than 0.2.0-alpha)."""


@dataclass
class AuthorizationRun:
    """One run of ``conformance authorization``: per-scenario results and what the browser did."""

    results: dict[str, ScenarioResult]
    returncode: int | None
    duration_s: float
    authorization_urls: list[str] = field(default_factory=list)
    redirects: list[str] = field(default_factory=list)
    """Where the authorization server sent the browser (the suite's callback, with code or error)."""
    browser_error: str | None = None
    output: str = ""


# --------------------------------------------------------------------------- tool location


def authorization_cli(default: Path = DEFAULT_BIN) -> Path:
    """The conformance CLI to use; raises ``AuthorizationCommandMissing`` if it cannot do this."""
    path = Path(os.environ.get(AUTHZ_BIN_ENV, str(default)))
    if not path.exists():
        raise AuthorizationCommandMissing(f"{path} not found")
    probe = _cli(path, "list", "--authorization")
    if probe.returncode != 0:
        raise AuthorizationCommandMissing(
            f"{path} (conformance {cli_version(path)}) has no `authorization` command "
            f"({_shorten(probe.stderr or probe.stdout)}); it needs @modelcontextprotocol/conformance "
            f">= 0.2.0-alpha (tested: 0.2.0-alpha.12); point ${AUTHZ_BIN_ENV} at such a CLI"
        )
    return path


def cli_version(cli: Path) -> str:
    return _cli(cli, "--version").stdout.strip() or "unknown"


def list_authorization_scenarios(cli: Path) -> dict[str, list[str]]:
    """Authorization server scenario name -> spec versions, in the order the suite runs them."""
    proc = _cli(cli, "list", "--authorization")
    scenarios: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        m = _LIST_LINE.match(line)
        if m:
            versions = m.group("versions")
            scenarios[m.group("name")] = versions.split(",") if versions else []
    if proc.returncode != 0 or not scenarios:
        raise RuntimeError(f"could not parse `conformance list --authorization`:\n{proc.stdout}{proc.stderr}")
    return scenarios


def _cli(cli: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cli), *args], capture_output=True, text=True, timeout=60, env=_env("http://x", None), check=False
    )


# ------------------------------------------------------------------------------- running


def run_authorization_suite(
    cli: Path,
    issuer: str,
    *,
    client_id: str,
    callback_port: int,
    sign_in: SignIn,
    resource: str | None = None,
    client_secret: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AuthorizationRun:
    """Run every authorization server scenario against ``issuer`` (exactly its ``issuer`` value).

    ``client_id`` must be registered with ``http://127.0.0.1:<callback_port>/callback`` as a
    redirect URI. ``timeout_s`` bounds the whole run (the CLI is killed after it).
    """
    expected = list(list_authorization_scenarios(cli))
    cmd = [str(cli), "authorization", "--url", issuer, "--client-id", client_id, "-p", str(callback_port)]
    if resource is not None:
        cmd += ["--resource", resource]
    if client_secret is not None:
        cmd += ["--client-secret", client_secret]
    callback = f"http://127.0.0.1:{callback_port}/callback"

    with _result_dir() as out_dir:
        start = time.monotonic()
        with subprocess.Popen(
            [*cmd, "-o", str(out_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_env(issuer, None),
            cwd=out_dir,
            start_new_session=True,
        ) as proc:
            browser = _Browser(proc, sign_in, callback)
            reader = threading.Thread(target=browser.follow, daemon=True)
            reader.start()
            timed_out = False
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
            reader.join(timeout=2 if timed_out else 10)  # a hung sign_in keeps the reader busy
        run = AuthorizationRun(
            results={},
            returncode=None if timed_out else proc.returncode,
            duration_s=time.monotonic() - start,
            authorization_urls=browser.authorization_urls,
            redirects=browser.redirects,
            browser_error=browser.error,
            output="".join(browser.lines),
        )
        run.results = _collect(out_dir, expected, run, timed_out=timed_out, timeout_s=timeout_s)
    return run


class _Browser:
    """Reads the CLI's output; on the authorization URL, signs in and follows the redirect."""

    def __init__(self, proc: subprocess.Popen[str], sign_in: SignIn, callback: str) -> None:
        self.proc = proc
        self.sign_in = sign_in
        self.callback = callback
        self.lines: list[str] = []
        self.authorization_urls: list[str] = []
        self.redirects: list[str] = []
        self.error: str | None = None

    def follow(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # stdout closed when the CLI is killed
            for line in self.proc.stdout:
                self.lines.append(line)
                if _AUTHORIZATION_URL.match(line.strip()):
                    self._authorize(line.strip())

    def _authorize(self, url: str) -> None:
        self.authorization_urls.append(url)
        try:
            location = self.sign_in(url)
            self.redirects.append(location)
            if location.split("?", 1)[0] != self.callback:
                raise RuntimeError(f"the browser was sent to {location}, not to the callback {self.callback}")
            _deliver(location)
        except Exception as exc:  # noqa: BLE001 - recorded; the suite would otherwise wait 5 minutes
            self.error = _shorten(f"browser step failed: {exc}", 500)
            _kill_group(self.proc)


def _deliver(location: str, attempts: int = 50) -> None:
    """The browser following the redirect to the suite's loopback callback server."""
    for _ in range(attempts):
        try:
            httpx2.get(location, timeout=10.0)
            return
        except httpx2.ConnectError:  # the callback server may not be listening yet
            time.sleep(0.1)
    raise RuntimeError(f"the suite's callback server did not answer at {location}")


def _collect(
    out_dir: Path, expected: list[str], run: AuthorizationRun, *, timed_out: bool, timeout_s: float
) -> dict[str, ScenarioResult]:
    chunks = _split_output(run.output)
    results: dict[str, ScenarioResult] = {}
    for name in expected:
        output = chunks.get(name, "")
        checks_path = _find_checks(out_dir, name)
        if checks_path is not None:
            results[name] = _from_checks(name, _load_checks(checks_path), output)
        elif name not in chunks:
            results[name] = ScenarioResult(name, "error", reason="not run: the CLI stopped before it", output=output)
        elif run.browser_error:
            results[name] = ScenarioResult(name, "error", reason=run.browser_error, output=output)
        elif timed_out:
            reason = f"no result within {timeout_s:g} s (CLI killed)"
            results[name] = ScenarioResult(name, "timeout", reason=reason, output=output)
        else:
            reason = f"CLI exited {run.returncode} without checks.json: {_shorten(output[-200:])}"
            results[name] = ScenarioResult(name, "error", reason=reason, output=output)
    failed = any(r.status == "failed" for r in results.values())
    if run.returncode is not None and not run.browser_error and run.returncode != int(failed):
        # Exit status disagrees with checks.json (exit 1 <=> a FAILURE check): trust neither.
        for result in results.values():
            result.status = "error"
            result.reason = _shorten(f"CLI exit {run.returncode} disagrees with checks.json; {result.reason or ''}")
    return results


def _from_checks(name: str, checks: list[dict[str, Any]], output: str) -> ScenarioResult:
    result = _result_from_checks(name, checks, 0.0, output)
    if result.checks_passed == 0 and result.checks_failed == 0:  # e.g. only SKIPPED checks
        skipped = "; ".join(str(c.get("errorMessage", "")) for c in checks)
        result.status, result.reason = "error", _shorten(f"no check ran (skipped: {skipped})")
    return result


def _split_output(output: str) -> dict[str, str]:
    chunks: dict[str, list[str]] = {}
    current: str | None = None
    for line in output.splitlines(keepends=True):
        m = _SCENARIO_START.match(line.strip())
        if m:
            current = m.group("name")
            chunks[current] = []
        elif line.startswith("=== SUMMARY"):
            current = None
        elif current is not None:
            chunks[current].append(line)
    return {name: "".join(lines) for name, lines in chunks.items()}


def _find_checks(out_dir: Path, scenario: str) -> Path | None:
    # The CLI names result dirs "authorization-server-<scenario>-<ISO timestamp, ':' and '.' as '-'>".
    stamp = re.compile(re.escape(f"authorization-server-{scenario}-") + r"\d{4}-\d{2}-\d{2}T[\d-]+Z$")
    matches = sorted(p for p in out_dir.iterdir() if p.is_dir() and stamp.match(p.name))
    checks = matches[-1] / "checks.json" if matches else None
    return checks if checks is not None and checks.exists() else None


@contextlib.contextmanager
def _result_dir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="bastion-authz-conformance-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

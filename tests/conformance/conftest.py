"""Shared fixtures for the MCP conformance tests (direct and through Bastion).

* ``conformance_cli``  - path of ``.tools/bin/conformance`` (0.1.16); runs
  scripts/install-node-tools.sh first (about 10 s the first time, well under 2 s when already
  installed) and checks the 0.2.0 line (``.tools/bin/conformance-next``) is there too. Skips the
  test only when the tools are missing and npm is not on PATH to install them.
* ``fixture_server_url`` - a running ``fixture_server.py`` (session scope, shared by the direct
  and the through-Bastion tests), e.g. ``http://127.0.0.1:41234/mcp``.
* ``suite_run`` - parametrised over ``harness.SUITE_RUNS``: 0.1.16 ``--suite all``, 0.2.0
  ``--suite all``, 0.2.0 ``--requirements 2026-07-28`` (test ids ``0.1.16-all``, ...).
* ``direct_results`` - that run against the fixture server, made once per session (``DirectRuns``)
  and shared by every test that asks for it (the direct test asserts on it, the Bastion test
  compares with it).
* ``harness`` - the ``harness`` module (``run_server_scenarios``, ``list_server_scenarios``, ...).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # import harness whatever pytest's import mode
    sys.path.insert(0, str(_HERE))

import harness as _harness  # noqa: E402


def _run_id(run: _harness.SuiteRun) -> str:
    return f"{run.line}-{run.requirements or 'all'}"


@pytest.fixture(scope="session")
def harness() -> ModuleType:
    return _harness


@pytest.fixture(scope="session")
def conformance_cli() -> Path:
    if not _harness.DEFAULT_BIN.exists() and shutil.which("npm") is None:
        pytest.skip("conformance suite not installed and npm not on PATH")
    try:
        return _harness.ensure_tools()
    except subprocess.CalledProcessError as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(f"scripts/install-node-tools.sh failed:\n{stderr}")


@pytest.fixture(scope="session")
def fixture_server_url() -> Iterator[str]:
    with _harness.running_fixture_server() as url:
        yield url


class DirectRuns:
    """Each run of ``SUITE_RUNS`` against the fixture server, made on first use and then reused.

    (A session-scoped *parametrised* fixture would not do: pytest keeps one parameter's value at a
    time and makes it again when the next module asks for it.)
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._results: dict[_harness.SuiteRun, dict[str, _harness.ScenarioResult]] = {}

    def __call__(self, run: _harness.SuiteRun) -> dict[str, _harness.ScenarioResult]:
        if run not in self._results:
            self._results[run] = _harness.run_server_scenarios(self.url, line=run.line, requirements=run.requirements)
        return self._results[run]


@pytest.fixture(scope="session")
def direct_runs(conformance_cli: Path, fixture_server_url: str) -> DirectRuns:
    return DirectRuns(fixture_server_url)


@pytest.fixture(params=_harness.SUITE_RUNS, ids=_run_id)
def suite_run(request: pytest.FixtureRequest) -> _harness.SuiteRun:
    run: _harness.SuiteRun = request.param
    return run


@pytest.fixture
def direct_results(direct_runs: DirectRuns, suite_run: _harness.SuiteRun) -> dict[str, _harness.ScenarioResult]:
    return direct_runs(suite_run)

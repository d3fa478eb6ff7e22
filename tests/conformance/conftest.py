"""Shared fixtures for the MCP conformance tests (direct and through Bastion).

* ``conformance_cli``  - path of ``.tools/bin/conformance``; runs scripts/install-node-tools.sh
  first (about 10 s the first time, well under 2 s when already installed). Skips the test only
  when the tools are missing and npm is not on PATH to install them.
* ``fixture_server_url`` - a running ``fixture_server.py`` (module scope), e.g.
  ``http://127.0.0.1:41234/mcp``.
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


@pytest.fixture(scope="module")
def fixture_server_url() -> Iterator[str]:
    with _harness.running_fixture_server() as url:
        yield url

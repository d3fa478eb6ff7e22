"""The installed conformance suite lines, where their CLIs are, and the environment they run in.

Two lines of the npm package ``@modelcontextprotocol/conformance`` are installed (``LINES``):

* ``"0.1.16"`` (default): ``.tools/bin/conformance``, 32 server scenarios, ``--suite all``.
* ``"0.2.0"``: ``.tools/bin/conformance-next`` (0.2.0-alpha.12), 65 server scenarios, ``--suite
  all`` or a requirement set (``--requirements 2026-07-28``).

Both run under Node 22 through the wrappers that ``scripts/install-node-tools.sh`` writes
(``ensure_tools`` runs it); ``BASTION_CONFORMANCE_BIN`` / ``BASTION_CONFORMANCE_NEXT_BIN`` override
a line's path.

Extra request headers (e.g. the gateway's bearer token): the CLI has no option for them, so
``cli_env(url, headers)`` runs it with ``NODE_OPTIONS=--import=inject_headers.mjs``, a preload that
adds them to every request to the target origin (``fetch``, npm ``undici.request`` and
``node:http(s)`` ``request``/``get``); see that file.

No MCP SDK here: this only locates and configures the Node CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DEFAULT_BIN = REPO_ROOT / ".tools" / "bin" / "conformance"
NEXT_BIN = REPO_ROOT / ".tools" / "bin" / "conformance-next"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-node-tools.sh"
PRELOAD = HERE / "inject_headers.mjs"


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


class ConformanceToolMissing(RuntimeError):
    """A suite line's CLI wrapper is not installed (``bash scripts/install-node-tools.sh`` installs it)."""


def suite_line(line: str) -> SuiteLine:
    """The ``SuiteLine`` named ``line``; raises ``ValueError`` for an unknown line."""
    try:
        return LINES[line]
    except KeyError:
        raise ValueError(f"unknown conformance suite line {line!r}; known: {list(LINES)}") from None


def conformance_bin(line: str = DEFAULT_LINE) -> Path:
    """Path of ``line``'s CLI wrapper; raises ``ConformanceToolMissing`` when it is not installed."""
    spec = suite_line(line)
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


def cli_env(url: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    """The CLI's environment: no colours, and with ``headers`` the preload that adds them to
    every request to ``url``'s origin (settings left over from the caller's environment removed)."""
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

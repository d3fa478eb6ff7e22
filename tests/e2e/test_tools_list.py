"""``bastion tools list``: the tool inventory from real upstreams (stdio and Streamable HTTP).

Real processes: the ``bastion`` CLI starts ``mcp-server-time`` over stdio (twice: a route that
trusts annotations and one that does not) and lists the demo notes server over HTTP; one HTTP
route points at a closed port and one keeps per-user credentials. The policy permits calls to
read tools only, so ``permitted`` tells configured, annotated and defaulted risks apart.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.bastion_process import BASTION, BIN, notes_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("reads")
permit (principal, action == Action::"tools/call", resource is Tool)
when { resource.risk == "read" };

@id("reset-with-review") @approval("review")
permit (principal, action == Action::"tools/call", resource == Tool::"time/reset_clock");

@id("notes-staff")
permit (principal, action == Action::"tools/call", resource)
when { resource in Server::"notes" && principal in Group::"staff" };
"""
VAULT_KEY_VAR = "TOOLS_LIST_E2E_VAULT_KEY"
TIME = [str(BIN / "mcp-server-time"), "--local-timezone", "UTC"]


@pytest.fixture(scope="module")
def notes_url() -> Iterator[str]:
    with notes_server() as url:
        yield url


def _config(tmp_path: Path, notes_url: str) -> Path:
    (tmp_path / "policy.cedar").write_text(POLICY, encoding="utf-8")
    config: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "policy": {"files": [str(tmp_path / "policy.cedar")]},
        "credentials": {"vault_key": {"env": VAULT_KEY_VAR}},
        "routes": [
            {
                "name": "time",
                "stdio": {"command": TIME[0], "args": TIME[1:]},
                "tools": {
                    "get_current_time": {
                        "risk": "read", "owner": "platform", "classification": "internal", "labels": ["clock"]
                    },
                    "reset_clock": {"risk": "destructive", "owner": "ops", "classification": "restricted"},
                },
            },
            {"name": "clock", "stdio": {"command": TIME[0], "args": TIME[1:]}, "trust_annotations": True},
            {"name": "notes", "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]}},
            {"name": "broken", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True, "allow": ["127.0.0.1"]}},
            {
                "name": "tracker",
                "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True, "allow": ["127.0.0.1"]},
                "credentials": {"oauth": {"issuer": "https://127.0.0.1:9", "client_id": "bastion"}},
                "tools": {"create_issue": {"risk": "write", "owner": "tracker-team"}},
            },
        ],
    }  # fmt: skip
    path = tmp_path / "bastion.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _run(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", VAULT_KEY_VAR: base64.urlsafe_b64encode(bytes(32)).decode().rstrip("=")}
    return subprocess.run(
        [BASTION, "tools", "list", "--config", str(config), *extra],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def _lines(result: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The JSON lines by (route, tool); a route note is keyed (route, "")."""
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return {(line["route"], line.get("tool", "")): line for line in lines}


def test_inventory_as_json_lines(tmp_path: Path, notes_url: str) -> None:
    result = _run(_config(tmp_path, notes_url), "--json")
    assert result.returncode == 1, result.stderr  # the broken upstream
    lines = _lines(result)

    configured = lines[("time", "get_current_time")]
    assert configured["risk"] == "read"
    assert configured["risk_source"] == "config"
    assert (configured["owner"], configured["classification"], configured["labels"]) == (
        "platform", "internal", ["clock"]
    )  # fmt: skip
    assert configured["permitted"] is True
    assert configured["approval"] == "no"
    assert configured["flags"] == []

    defaulted = lines[("time", "convert_time")]  # listed, not configured, annotations not trusted
    assert (defaulted["risk"], defaulted["risk_source"], defaulted["listed"]) == ("destructive", "default", True)
    assert defaulted["permitted"] is False  # only read tools may be called
    assert defaulted["flags"] == ["no-owner", "no-classification", "destructive"]

    annotated = lines[("clock", "convert_time")]  # readOnlyHint, on a route that trusts annotations
    assert (annotated["risk"], annotated["risk_source"], annotated["permitted"]) == ("read", "annotations", True)
    assert annotated["flags"] == ["no-owner", "no-classification"]

    unlisted = lines[("time", "reset_clock")]  # destructive, but only ever with a person's approval
    assert (unlisted["listed"], unlisted["risk_source"], unlisted["permitted"]) == (False, "config", True)
    assert unlisted["approval"] == "always"
    assert unlisted["flags"] == ["unlisted", "destructive"]

    notes_tools = [line for (route, tool), line in lines.items() if route == "notes" and tool]
    assert notes_tools, "the HTTP upstream's tools are listed"
    assert all(line["listed"] and line["risk_source"] == "default" for line in notes_tools)
    # every notes tool counts as destructive (annotations not trusted) and staff may call it unapproved
    assert all(line["approval"] == "no" and "unapproved" in line["flags"] for line in notes_tools)

    broken = lines[("broken", "")]
    assert broken["status"] == "error"
    assert "UpstreamUnavailable" in broken["message"]
    assert not [tool for (route, tool) in lines if route == "broken" and tool]

    assert lines[("tracker", "")]["status"] == "per-user-credentials"
    issue = lines[("tracker", "create_issue")]
    assert (issue["risk"], issue["risk_source"], issue["listed"]) == ("write", "config", False)
    assert issue["permitted"] is False


def test_one_route_and_the_table(tmp_path: Path, notes_url: str) -> None:
    config = _config(tmp_path, notes_url)
    result = _run(config, "--route", "time")
    assert result.returncode == 0, result.stderr  # the broken route is not asked
    assert "whether some principal could be permitted" in result.stdout
    assert "need a person's approval" in result.stdout
    assert "no-owner,no-classification,destructive" in result.stdout
    assert "notes" not in result.stdout
    assert "broken" not in result.stdout

    result = _run(config, "--route", "broken")
    assert result.returncode == 1
    assert "route broken: error: UpstreamUnavailable" in result.stdout

    result = _run(config, "--route", "nowhere")
    assert result.returncode == 2
    assert "no route named 'nowhere'" in result.stderr

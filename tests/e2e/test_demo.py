"""``bastion demo --once``: the whole scripted demo as a subprocess (it starts its own servers)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests.support.bastion_process import BASTION, free_port

pytestmark = pytest.mark.e2e


def test_demo_once_exits_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [BASTION, "demo", "--once", "--port", str(free_port()), "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FAIL" not in result.stdout, output
    assert result.stdout.count("PASS") >= 7, output
    assert "0 failed" in result.stdout
    # It left a verifiable audit log behind.
    verify = subprocess.run(
        [BASTION, "audit", "verify", "--db", str(tmp_path / "demo" / "data" / "bastion.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

"""Signed checkpoints of the audit chain, end to end (issue 17): a real gateway writes them as calls are
recorded; ``bastion audit verify`` holds the log against them, so cutting off the newest records
(which leaves a valid, shorter chain) is found; a copy of the checkpoints and of the public keys
kept elsewhere still finds it once the local checkpoints are deleted too.

Real processes on loopback: the ledger MCP server, ``bastion serve``, the ``bastion`` CLI, raw
2026-07-28 requests; the tampering is done on the SQLite file with the gateway stopped.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import httpx2
import pytest
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import modern_post, wait_until
from tests.support.ledger_server import ledger_server

pytestmark = pytest.mark.e2e

POLICY = """
@id("dev-deploy")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"ledger/deploy");
"""


def _verify(bastion: BastionProcess, *extra: str) -> tuple[int, str]:
    done = bastion.cli("audit", "verify", "--config", str(bastion.config_path), *extra, check=False)
    return done.returncode, done.stdout + done.stderr


def _checkpoint_seqs(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["seq"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_checkpoints_reveal_a_log_whose_newest_records_were_cut_off(tmp_path: Path) -> None:
    workdir = tmp_path / "gw"
    workdir.mkdir()
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    with ledger_server() as (ledger_url, _):
        bastion = BastionProcess(workdir, {
            "policy": {"files": [str(workdir / "policy.cedar")]},
            "audit": {"checkpoints": {"every_records": 1, "every_s": "1s"}},
            "routes": [{"name": "ledger", "http": {"url": ledger_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
        })  # fmt: skip
        checkpoints = workdir / "data" / "audit-checkpoints.jsonl"
        with bastion, httpx2.Client(timeout=10) as http:
            token = bastion.mint("rita", "ledger", "dev")
            for n in range(3):
                params = {"name": "deploy", "arguments": {"service": f"svc-{n}", "env": "prod"}}
                assert modern_post(http, bastion.url("ledger"), token, "tools/call", params).status_code == 200
            assert wait_until(lambda: max(_checkpoint_seqs(checkpoints), default=0) >= 6, timeout_s=10)
            code, said = _verify(bastion)
            assert code == 0, said
            assert "the newest signed checkpoint" in said
        keys = bastion.cli("audit", "checkpoint-keys", "--config", str(bastion.config_path)).stdout
        elsewhere = tmp_path / "elsewhere"  # what an operator ships off the machine
        elsewhere.mkdir()
        (elsewhere / "keys.json").write_text(keys, encoding="utf-8")
        shutil.copy(checkpoints, elsewhere / "checkpoints.jsonl")

        last = max(_checkpoint_seqs(checkpoints))
        with sqlite3.connect(bastion.database) as db:  # cut off the newest two records
            db.execute("DELETE FROM audit_events WHERE seq > ?", (last - 2,))
        code, said = _verify(bastion)
        assert code == 1
        assert f"truncated: the log ends at seq {last - 2}" in said

        checkpoints.unlink()  # the local checkpoints go too: the log alone cannot tell
        assert _verify(bastion)[0] == 0
        code, said = _verify(bastion, "--checkpoints", str(elsewhere / "checkpoints.jsonl"),
                             "--checkpoint-keys", str(elsewhere / "keys.json"))  # fmt: skip
        assert code == 1
        assert "truncated" in said
        code, said = _verify(bastion, "--checkpoints", str(tmp_path / "missing.jsonl"))
        assert code == 2
        assert "no checkpoints there" in said

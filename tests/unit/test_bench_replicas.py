"""The replica rows of ``make bench`` (``benchmarks/replicas.py``): their table, their place in the
scaling rows and the document, the replicas' configuration and HAProxy's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # run.py's siblings import by name

from load import Run
from replicas import ONE, ONE_BALANCED, TWO, ReplicaRun, haproxy_config, replica_rows
from report import scaling_markdown
from scaling import Scaling
from targets import BastionServer

from bastion.config import load_config


def replica_run(setup: str, conns: int, calls: int, *, errors: int = 0, busy: float = 1.0) -> ReplicaRun:
    run = Run(target=setup, conns=conns, round=1, calls=calls, requests=calls, errors=errors, duration_s=1.0,
              p50_ms=2.0, p99_ms=5.0)  # fmt: skip
    return ReplicaRun(setup, run, cpu_ms=1.5, haproxy_cpu_ms=0.1 if setup != ONE else 0.0, busy=busy,
                      pg_xacts=0.25 if setup == TWO else 0.125, pg_cpu_ms=0.4)  # fmt: skip


def test_the_rows_give_each_setup_against_one_replica_per_concurrency() -> None:
    found = [replica_run(setup, conns, calls) for conns in (16, 64)
             for setup, calls in ((ONE, 1000), (ONE_BALANCED, 900), (TWO, 1300))]  # fmt: skip
    found.append(replica_run(TWO, 16, 1500, busy=0.9))  # a second round: the median of 1,300 and 1,500
    rows = replica_rows(found)
    assert rows[0] == ("setup", "c", "calls/s", "vs one", "p50 ms", "p99 ms", "CPU/call ms", "HAProxy ms",
                       "machine busy", "PG write xact/call", "PG CPU/call ms")  # fmt: skip
    assert rows[1] == (ONE, "16", "1,000", "1.00x", "2.00", "5.00", "1.500", "0.000", "100%", "0.125", "0.400")
    assert rows[3] == (TWO, "16", "1,400", "1.40x", "2.00", "5.00", "1.500", "0.100", "95%", "0.250", "0.400")
    assert [row[:4] for row in rows[4:]] == [(ONE, "64", "1,000", "1.00x"), (ONE_BALANCED, "64", "900", "0.90x"),
                                             (TWO, "64", "1,300", "1.30x")]  # fmt: skip


def test_the_table_appears_only_when_measured_and_its_errors_make_the_run_invalid() -> None:
    figures = Scaling()
    assert figures.replica_rows() == []
    assert "### Replicas" not in "\n".join(scaling_markdown(figures))
    figures.replicas = [replica_run(setup, 16, 100) for setup in (ONE, ONE_BALANCED, TWO)]
    figures.replicas.append(replica_run(TWO, 64, 100, errors=2))
    assert "### Replicas: two behind HAProxy against one, on PostgreSQL + Redis" in "\n".join(
        scaling_markdown(figures))  # fmt: skip
    assert [r for r in figures.runs() if r.errors] == [figures.replicas[-1].run]


def test_replicas_share_one_public_url(tmp_path: Path) -> None:
    (tmp_path / "policies.cedar").write_text("", encoding="utf-8")
    server = BastionServer("replica-2", tmp_path, 18081, "full", public_url="http://127.0.0.1:18080")
    server.write_config("http://127.0.0.1:9100/mcp")
    config = load_config(server.config_path)
    assert str(config.server.public_url).rstrip("/") == "http://127.0.0.1:18080"
    assert config.server.port == 18081


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (make haproxy)")
def test_haproxy_accepts_the_configuration(tmp_path: Path) -> None:
    text = haproxy_config(18080, [18081, 18082], host="127.0.0.1:18090")
    assert "balance roundrobin" in text
    assert "    server r0 127.0.0.1:18081\n    server r1 127.0.0.1:18082\n" in text
    assert "http-request set-header host 127.0.0.1:18090" in text
    assert "cookie" not in text  # no stickiness
    path = tmp_path / "haproxy.cfg"
    path.write_text(text, encoding="utf-8")
    checked = subprocess.run([shutil.which("haproxy") or "haproxy", "-c", "-f", str(path)], capture_output=True,
                             text=True, timeout=30, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr

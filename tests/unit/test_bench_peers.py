"""``make bench-peers``'s pure parts: the CPU of a process tree from ``/proc`` (against real child
processes, reaped and alive), the results tables, the best peer's CPU ratio and its target, the
document and the chart."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))  # the benchmark modules import their siblings by name

from load import Run  # noqa: E402
from peer_chart import draw  # noqa: E402
from peer_check import describe  # noqa: E402
from peer_report import markdown, text  # noqa: E402
from peer_results import PeerResults, Target  # noqa: E402
from processes import cpu_seconds, tree_cpu_seconds  # noqa: E402

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"
FAMILY = f"""
import subprocess, sys, time
burn = {BURN.format(s=0.25)!r}
subprocess.run([sys.executable, "-c", burn], check=True)  # reaped: counted in this process's cutime
alive = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(60)"])
time.sleep(0.1)
print("ready", flush=True)
sys.stdin.read()
alive.kill()
"""


def test_tree_cpu_counts_reaped_and_live_children() -> None:
    parent = subprocess.Popen([sys.executable, "-c", FAMILY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "ready"
        # wait until the live child has burnt its share too
        for _ in range(200):
            if tree_cpu_seconds(parent.pid) - cpu_seconds(parent.pid) >= 0.45:
                break
            time.sleep(0.05)
        own, tree = cpu_seconds(parent.pid), tree_cpu_seconds(parent.pid)
        assert tree - own >= 0.45  # both children's 0.25 s, less the clock-tick rounding
        assert tree >= own
        assert 0 <= tree_cpu_seconds(parent.pid, system_only=True) <= tree
    finally:
        parent.communicate("", timeout=30)


def test_tree_cpu_of_a_missing_process_raises() -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    with pytest.raises(OSError, match=str(finished.pid)):
        tree_cpu_seconds(finished.pid)


def test_describe_flattens_exception_groups() -> None:
    group = ExceptionGroup("in a task group", [ConnectionError("refused"), ValueError("bad answer")])
    assert describe(group) == "ConnectionError: refused; ValueError: bad answer"
    assert describe(TimeoutError()) == "TimeoutError"


def run(target: str, conns: int, cpu_ms: float, calls: int = 1000, errors: int = 0, round_no: int = 1) -> Run:
    return Run(target=target, conns=conns, round=round_no, calls=calls, requests=calls, errors=errors,
               duration_s=2.0, p50_ms=cpu_ms * 2, p99_ms=cpu_ms * 5, server_cpu_ms=cpu_ms,
               upstream_cpu_ms=0.05)  # fmt: skip


def results() -> PeerResults:
    runs = []
    for conns, bastion in ((1, 1.0), (16, 0.5)):
        runs += [run("direct", conns, 0.05), run("bastion", conns, bastion)]
        runs += [run("peer-slow", conns, 20.0), run("peer-fast", conns, 3.0), run("peer-fast", conns, 4.0, round_no=2)]
        runs += [run("peer-broken", conns, 0.1, errors=3)]  # cheapest, but its runs had errors
    targets = [Target(name, "v1", f"{name} as configured") for name in ("direct", "bastion", "peer-slow")]
    targets += [Target("peer-fast", "v2", "fast"), Target("peer-broken", "v3", "broken")]
    targets.append(Target("peer-down", "v4", "down", error="did not start: TimeoutError\n--- log ---\n| x"))
    return PeerResults(runs, targets, concurrencies=(1, 16), rounds=2, duration_s=2.0, started="2026-12-06 14:00 UTC")


def test_best_peer_is_the_cheapest_without_errors_and_the_ratio_divides_by_bastion() -> None:
    peers = results()
    assert peers.measured == ["direct", "bastion", "peer-slow", "peer-fast", "peer-broken"]
    assert peers.peers == ["peer-slow", "peer-fast", "peer-broken"]
    assert peers.best_peer(1) == peers.best_peer(16) == "peer-fast"
    assert peers.ratio(1) == pytest.approx(3.5)  # median of 3.0 and 4.0 over Bastion's 1.0
    assert peers.ratio(16) == pytest.approx(7.0)
    assert peers.ratio_rows()[1:] == [
        ("1", "peer-fast", "3.500", "1.000", "3.5x"),
        ("16", "peer-fast", "3.500", "0.500", "7.0x"),
    ]
    assert peers.invalid() == []


def test_the_ratio_target_is_judged_per_concurrency() -> None:
    verdicts = results().verdicts()
    assert [(value, ok) for _, value, ok in verdicts] == [("3.5x (peer-fast)", False), ("7.0x (peer-fast)", False)]
    assert verdicts[0][0] == "at least 10x less CPU per call than the best peer configuration at c=1"
    cheap = results()
    cheap.runs = [r for r in cheap.runs if r.target != "bastion"] + [run("bastion", 1, 0.3), run("bastion", 16, 0.3)]
    assert [ok for _, _, ok in cheap.verdicts()] == [True, True]  # 3.5 / 0.3 and 3.5 / 0.3: over 10x
    assert "MISS  at least 10x less CPU per call than the best peer configuration at c=16: 7.0x" in text(results())


def test_rows_give_medians_and_flag_a_peer_with_errors() -> None:
    rows = {(row[0], row[1]): row for row in results().rows()[1:]}
    assert rows[("peer-fast", "16")] == ("peer-fast", "16", "500", "7.000", "17.500", "3.500", "7.0x", "0.050")
    assert rows[("direct", "1")][6] == ""  # no ratio for the upstream alone
    assert ("peer-broken (errors: 6)", "1") in rows
    assert not any(name == "peer-down" for name, _ in rows)


def test_without_a_measured_peer_the_ratio_is_not_available() -> None:
    runs = [run("direct", 1, 0.05), run("bastion", 1, 1.0), run("bastion", 1, 1.0, errors=2, round_no=2)]
    peers = PeerResults(runs, [Target("direct", "", ""), Target("bastion", "", "")], (1,), 2, 2.0, "now")
    assert peers.ratio(1) is None
    assert peers.verdicts() == []  # nothing to judge the ratio target by
    assert peers.ratio_rows()[1] == ("1", "none measured", "", "1.000", "n/a")
    assert [r.round for r in peers.invalid()] == [2]  # Bastion's errors void the comparison


def test_document_has_command_configurations_failures_table_and_chart() -> None:
    info = {"cpu": "Test CPU", "nproc": "2", "kernel": "6.1", "python": "CPython 3.11", "wrk": "wrk 4.1.0"}
    doc = markdown(results(), info)
    assert "Generated by `make bench-peers`" in doc
    assert "| peer-down | v4 | down **Failed, not measured:** did not start: TimeoutError --- log --- \\| x |" in doc
    assert "| 16 | peer-fast | 3.500 | 0.500 | 7.0x |" in doc
    assert (
        "- **not met**: at least 10x less CPU per call than the best peer configuration at c=1 — measured 3.5x" in doc
    )
    assert "`benchmarks/mcp_session.lua`" in doc
    assert "peer_session.lua" not in doc
    assert "![calls/s and CPU per call per target and concurrency](img/peers.png)" in doc
    assert "Test CPU, nproc 2" in doc
    assert "QUICK=1" not in doc


def test_the_chart_is_a_png_with_a_bar_per_measured_target(tmp_path: Path) -> None:
    path = tmp_path / "img" / "peers.png"
    draw(results(), path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert path.stat().st_size > 20_000

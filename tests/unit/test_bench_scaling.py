"""The pure parts of ``make bench``'s scaling rows, targets, report and chart (``benchmarks/scaling.py``,
``results.py``, ``report.py``, ``render.py``, ``charts.py``): RSS parsing, the tables made of the
figures, the hot-path and policy targets, the link to the peers' document, the many-route config and
the PNG drawn from a run's figures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # run.py's siblings import by name

from charts import draw
from load import Run
from render import markdown_table
from report import markdown, scaling_markdown
from results import Results
from scaling import Scaling, SessionPoint, size_label, vm_rss_kib
from targets import BastionServer

from bastion.config import load_config

STATUS = "Name:\tbastion\nVmPeak:\t  250000 kB\nVmRSS:\t  143616 kB\nThreads:\t4\n"


def run(target: str, cpu_ms: float, *, arg_bytes: int = 0, conns: int = 16, round_no: int = 1) -> Run:
    return Run(target=target, conns=conns, round=round_no, calls=100, requests=100, duration_s=1.0,
               p50_ms=1.0, p99_ms=2.0, server_cpu_ms=cpu_ms, arg_bytes=arg_bytes)  # fmt: skip


def scaling() -> Scaling:
    figures = {"decide_p50_us": 20.0, "decide_p99_us": 40.0, "cached_p50_us": 4.5, "cached_p99_us": 6.0,
               "unrelated_us": 0.25, "list100_ms": 25.0, "list_stall_ms": 2.5, "load_s": 0.5}  # fmt: skip
    return Scaling(
        arguments=[run(t, cpu * (1 + n), arg_bytes=size, round_no=n + 1) for n in range(3)
                   for size, cpu in ((1_000, 0.5), (100_000, 5.0), (1_000_000, 30.0))
                   for t in ("direct", "bastion")],
        sessions=[SessionPoint(0, 140.0, run("s", 0.5)), SessionPoint(10_000, 160.0, run("s", 0.6))],
        routes={1: [run("r1", 0.5)], 100: [run("r100", 0.55)]},
        routes_rss_mib={1: 140.0, 100: 142.0},
        policies={10: {**figures, "decide_p99_us": 10.0}, 1_000: figures},
    )  # fmt: skip


def test_vm_rss_is_read_in_kib_and_missing_is_an_error() -> None:
    assert vm_rss_kib(STATUS) == 143_616
    with pytest.raises(ValueError, match="VmRSS"):
        vm_rss_kib("Name:\tkthreadd\nThreads:\t1\n")


@pytest.mark.parametrize(("size", "label"), [(1_000, "1 KB"), (100_000, "100 KB"), (1_000_000, "1 MB")])
def test_sizes_are_labelled_in_decimal_units(size: int, label: str) -> None:
    assert size_label(size) == label


def test_argument_rows_are_medians_over_the_rounds() -> None:
    rows = scaling().argument_rows()
    assert len(rows) == 4  # the header and one row per size
    one_mb = rows[3]
    assert one_mb[0] == "1 MB"
    assert one_mb[2] == "60.000"  # direct: median of 30, 60, 90
    assert one_mb[-1] == "60.000"


def test_session_rows_give_the_memory_added_per_session() -> None:
    rows = scaling().session_rows()
    assert rows[1][2] == "-"
    assert rows[2][:3] == ("10,000", "160", "2.0")  # 20 MiB over 10,000 sessions


def test_policy_targets_are_judged_at_1000_policies() -> None:
    judged = {name: (value, ok) for name, value, ok in scaling().targets()}
    assert judged["decide p99 (uncached) <= 50 µs with 1,000 policies"] == ("40.0 µs", True)
    assert judged["100-tool list <= 20 ms with 1,000 policies"] == ("25.0 ms", False)
    # figures the issue asks for without a threshold: given, not judged
    assert judged["unrelated policies near zero: what 1,000 policies that cannot apply add to decide"] == (
        "+0.2 µs", None)  # fmt: skip
    assert judged["longest stall of the event loop in a 100-tool list with 1,000 policies"] == ("2.5 ms", None)
    assert Scaling(policies={10: scaling().policies[10]}).targets() == []


def main_runs(*, bastion_c1: float, bastion_c16: float, added_p50_ms: float) -> list[Run]:
    """Runs of direct and Bastion at c=1, 16 and 64: Bastion's CPU per call and added p50 as given."""
    runs = []
    for conns, cpu in ((1, bastion_c1), (16, bastion_c16), (64, bastion_c16)):
        runs.append(run("direct", 0.02, conns=conns))
        bastion = run("bastion", cpu, conns=conns)
        bastion.p50_ms += added_p50_ms
        runs.append(bastion)
    return runs


def test_hot_path_targets_are_judged_per_concurrency() -> None:
    def judged(**figures: float) -> dict[str, tuple[str, bool | None]]:
        results = Results(runs=main_runs(**figures), micro={}, profiles={}, profile_runs={}, profile_note="",
                          rounds=1, duration_s=1.0, started="now")  # fmt: skip
        return {name: (value, ok) for name, value, ok in results.targets()}

    met = judged(bastion_c1=0.8, bastion_c16=0.3, added_p50_ms=1.0)  # every limit exactly
    assert met == {
        "added latency p50 at c=1 <= 1 ms": ("1.000 ms", True),
        "Bastion CPU per tools/call <= 0.8 ms at c=1": ("0.800 ms", True),
        "Bastion CPU per tools/call <= 0.3 ms at c=16": ("0.300 ms", True),
    }
    missed = judged(bastion_c1=0.5, bastion_c16=0.31, added_p50_ms=1.2)
    assert [ok for _, ok in missed.values()] == [False, True, False]


def test_scaling_runs_with_errors_make_the_run_invalid() -> None:
    bad = scaling()
    bad.routes[100][0].errors = 3
    results = Results(runs=[run("bastion", 0.5)], micro={}, profiles={}, profile_runs={}, profile_note="",
                      rounds=1, duration_s=1.0, started="now", scaling=bad)  # fmt: skip
    assert results.invalid() == [bad.routes[100][0]]


def test_floor_rows_set_bastion_against_the_floor_per_concurrency() -> None:
    figures = scaling()
    for round_no, (floor_c1, bastion_c1, floor_c16, bastion_c16) in enumerate(
        ((0.45, 0.70, 0.20, 0.38), (0.47, 0.66, 0.22, 0.40), (0.60, 0.90, 0.30, 0.50))
    ):
        for conns, floor_cpu, bastion_cpu in ((1, floor_c1, bastion_c1), (16, floor_c16, bastion_c16)):
            floor = run("floor", floor_cpu, conns=conns, round_no=round_no)
            floor.p50_ms, floor.main_cpu_ms, floor.other_cpu_ms = 0.6, floor_cpu / 2, floor_cpu / 2
            bastion = run("bastion", bastion_cpu, conns=conns, round_no=round_no)
            bastion.p50_ms, bastion.main_cpu_ms, bastion.other_cpu_ms = 0.8, bastion_cpu - 0.1, 0.1
            figures.floor += [floor, bastion]
    rows = figures.floor_rows()
    assert rows[1] == ("1", "0.470", "0.235 / 0.235", "0.700", "0.600 / 0.100", "+0.230", "0.600", "0.800")
    assert rows[2][0] == "16"
    assert rows[2][5] == "+0.180"  # medians 0.22 and 0.40
    figures.floor[-1].errors = 1
    assert figures.floor[-1] in figures.runs()  # a floor run with errors makes the whole run invalid


def test_the_shared_stores_table_appears_only_when_measured() -> None:
    figures = scaling()
    assert figures.shared_rows() == []
    assert "### Shared stores" not in "\n".join(scaling_markdown(figures))
    for conns, cpu in ((1, 1.3), (16, 0.5)):
        shared = run("bastion-shared", cpu, conns=conns)
        bastion = run("bastion", cpu - 0.2, conns=conns)
        figures.shared += [shared, bastion]
    rows = figures.shared_rows()
    assert rows[0][1] == "shared CPU/call ms"
    assert [row[5] for row in rows[1:]] == ["-0.200", "-0.200"]  # Bastion - shared: the default is cheaper
    assert "### Shared stores: Bastion on PostgreSQL + Redis against the embedded default" in "\n".join(
        scaling_markdown(figures))  # fmt: skip


def test_markdown_tables_and_the_section_without_scaling() -> None:
    assert markdown_table([("a", "b"), ("1", "2|3")]) == ["| a | b |", "|---|---:|", "| 1 | 2\\|3 |"]
    assert "Not measured in this run (`--no-scaling`)." in scaling_markdown(None)
    section = "\n".join(scaling_markdown(scaling()))
    assert "| 1,000 | 20.0 | 40.0 | 4.5 | 6.0 | +0.2 | 25.0 | 2.5 | 0.50 |" in section
    assert "**not met**: 100-tool list <= 20 ms with 1,000 policies — measured 25.0 ms" in section
    assert "**figure**: longest stall of the event loop in a 100-tool list with 1,000 policies — measured 2.5 ms" in (
        section)  # fmt: skip


def test_the_document_links_the_peers_document() -> None:
    runs = [*main_runs(bastion_c1=0.8, bastion_c16=0.3, added_p50_ms=0.5), *(
        run("bastion-normal", 0.5, conns=conns) for conns in (1, 16, 64))]  # fmt: skip
    results = Results(runs=runs, micro={}, profiles={}, profile_runs={}, profile_note="not profiled", rounds=1,
                      duration_s=1.0, started="now")  # fmt: skip
    info = {"cpu": "Test CPU", "nproc": "2", "kernel": "6.1", "python": "CPython 3.11", "wrk": "wrk 4.1.0",
            "libs": "none"}  # fmt: skip
    doc = markdown(results, info)
    assert "### Against the peers\n\n`make bench-peers` measures Bastion" in doc
    assert "[benchmarks-peers.md](benchmarks-peers.md)." in doc
    assert "- **met**: Bastion CPU per tools/call <= 0.3 ms at c=16 — measured 0.300 ms" in doc


def test_many_routes_config_loads_with_the_measured_route_last(tmp_path: Path) -> None:
    (tmp_path / "policies.cedar").write_text("", encoding="utf-8")
    server = BastionServer("bastion-routes-100", tmp_path, 18080, "full", routes=100)
    server.write_config("http://127.0.0.1:9100/mcp")
    config = load_config(server.config_path)
    names = [route.name for route in config.routes]
    assert len(names) == len(set(names)) == 100
    assert names[0] == "echo-001"
    assert names[-1] == "echo"
    assert str(config.routes[-1].http.url) == "http://127.0.0.1:9100/mcp"  # type: ignore[union-attr]


@pytest.mark.parametrize("with_scaling", [True, False])
def test_the_chart_is_a_png_drawn_from_the_figures(tmp_path: Path, with_scaling: bool) -> None:
    runs = [run(t, cpu, conns=c) for c in (1, 16, 64) for t, cpu in (("direct", 0.015), ("bastion", 0.6))]
    results = Results(runs=runs, micro={}, profiles={}, profile_runs={}, profile_note="", rounds=1,
                      duration_s=1.0, started="now", scaling=scaling() if with_scaling else None)  # fmt: skip
    path = tmp_path / "img" / "bench.png"
    draw(results, path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert path.stat().st_size > 20_000

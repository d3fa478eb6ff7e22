"""The observability rows of ``make bench`` (issue 17): what metrics and tracing cost per call, on and off.

Measured in-process by ``benchmarks/metrics_cost.py --json``, run as a child process (a registry and a
tracer provider of its own, nothing of the harness in its way): a ``tools/call`` through the pipeline
with every check slot filled, the real audit stage on an in-memory log and an upstream that answers at
once, 15 observed steps per call, as a real call. Each variant is the median of interleaved rounds of
microseconds of process CPU per call:

- ``off``: no observer (``metrics.enabled: false``, tracing off: the runner calls nothing);
- ``metrics on``: ``MetricsObserver`` (the default configuration);
- ``tracing unsampled``: ``TracingObserver`` with ``sample_ratio: 0`` (spans made, not recorded);
- ``tracing sampled, stage_spans false``: every trace kept, the request's span and the upstream call's;
- ``tracing sampled, full``: every trace kept, a span per stage (spans handed to a batch processor whose
  exporter drops them: what a collector costs is off this process).

The row's "added" is the variant minus ``off``: what it adds to each call's CPU, at any concurrency (the
observers take no lock and wait for nothing), and what it adds to a call's latency at c=1 (they run on
the request path; a batch processor's export runs on its own thread, after the reply, and is counted
here as CPU). These figures are measured in-process because through a server they are below the noise:
CPU per call through ``bastion serve`` varies by a few percent of about a millisecond from run to run,
more than the tens of microseconds measured here.

With ``--baseline REF`` the same program runs against that commit's extracted ``src`` (first on
``PYTHONPATH``) and its figures stand beside this checkout's; a commit without the observers (or whose
pipeline's interface differs) is reported as not measurable, with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from scenario import REPO

PROGRAM = REPO / "benchmarks" / "metrics_cost.py"
VARIANTS = (
    ("off", "off (no observer)"),
    ("on", "metrics on"),
    ("unsampled", "tracing unsampled (sample_ratio 0)"),
    ("no stages", "tracing sampled, stage_spans false"),
    ("traced", "tracing sampled, full (stage spans)"),
)
"""(key in ``metrics_cost.py --json``'s figures, the row's label), in the order of the table."""


@dataclass
class Observability:
    """The figures (microseconds of CPU per call, by variant) of this checkout and of the baseline
    (``None``: not asked for; ``baseline_note`` why it could not be measured when it could not)."""

    current: dict[str, float]
    calls: int
    rounds: int
    baseline: dict[str, float] | None = None
    baseline_label: str = ""
    baseline_note: str = ""

    def rows(self) -> list[tuple[str, ...]]:
        """(variant, µs/call, added µs/call[, baseline µs/call, baseline added, change of the added])."""
        header: tuple[str, ...] = ("variant", "CPU/call us", "added us")
        if self.baseline is not None:
            header += (f"{self.baseline_label} CPU/call us", f"{self.baseline_label} added us", "added, change us")
        rows = [header]
        for key, label in VARIANTS:
            added = self.current[key] - self.current["off"]
            row: tuple[str, ...] = (label, f"{self.current[key]:.1f}", f"{added:+.1f}" if key != "off" else "")
            if self.baseline is not None:
                before = self.baseline[key] - self.baseline["off"]
                row += (f"{self.baseline[key]:.1f}", f"{before:+.1f}" if key != "off" else "",
                        f"{added - before:+.1f}" if key != "off" else "")  # fmt: skip
            rows.append(row)
        return rows

    @property
    def command(self) -> str:
        """The command that measures the same figures by hand."""
        return f".venv/bin/python benchmarks/metrics_cost.py --json --calls {self.calls} --rounds {self.rounds}"


def run_program(calls: int, rounds: int, source: Path | None = None) -> dict[str, float]:
    """``metrics_cost.py --json``'s figures, with ``source`` (a ``src`` directory) first on
    ``PYTHONPATH`` when given. Raises ``RuntimeError`` (with the child's last error line) when it
    fails or measured another ``bastion`` than ``source``'s."""
    env = None if source is None else {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run([sys.executable, str(PROGRAM), "--json", "--calls", str(calls), "--rounds", str(rounds)],
                          capture_output=True, text=True, env=env, timeout=1800, check=False)  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"metrics_cost.py failed: {last[:300]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if source is not None and Path(figures["source"]).resolve() != (source / "bastion").resolve():
        raise RuntimeError(f"metrics_cost.py measured {figures['source']}, not {source / 'bastion'}")
    return {key: float(value) for key, value in figures["us_per_call"].items()}


def measure_observability(baseline_source: Path | None = None, baseline_label: str = "baseline", *,
                          quick: bool = False) -> Observability:  # fmt: skip
    """This checkout's figures and, with ``baseline_source`` (a commit's extracted ``src``), the
    baseline's; ``quick``: 3 rounds of 5,000 calls instead of 7 of 20,000. Raises ``RuntimeError``
    when this checkout's cannot be measured."""
    calls, rounds = (5_000, 3) if quick else (20_000, 7)
    result = Observability(run_program(calls, rounds), calls, rounds)
    if baseline_source is not None:
        result.baseline_label = baseline_label
        try:
            result.baseline = run_program(calls, rounds, baseline_source)
        except (RuntimeError, ValueError, KeyError) as exc:
            result.baseline_note = f"{baseline_label}: not measurable ({exc})"
    return result

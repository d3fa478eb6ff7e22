"""What the reports of ``make bench`` (``report``) and ``make bench-peers`` (``peer_report``) render
alike: the machine they ran on, tables for the terminal and in markdown, targets met or missed, and
the end of a run, which writes the document and its chart only when every run was clean."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar

from load import Run
from results import Verdict
from scenario import REPO

TERMINAL = {True: "MET ", False: "MISS", None: "FIG "}
MARKDOWN = {True: "**met**", False: "**not met**", None: "**figure**"}
"""How a :data:`~results.Verdict` is marked: met, missed, or a figure without a threshold."""


def machine() -> dict[str, str]:
    """This machine: ``cpu``, ``nproc``, ``python``, ``kernel``, ``wrk`` (its version) and ``libs``
    (the versions of the HTTP and policy libraries Bastion runs on, and SQLite's)."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    wrk_version = (wrk.stdout or wrk.stderr).splitlines()[0].split(" [")[0] if (wrk.stdout or wrk.stderr) else "?"

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return {
        "cpu": model,
        "nproc": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "wrk": wrk_version,
        "libs": ", ".join(
            f"{n} {version(n)}" for n in ("uvicorn", "uvloop", "httptools", "starlette", "aiohttp", "cedarpy")
        )
        + f", SQLite {sqlite3.sqlite_version}",
    }


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """A table for the terminal: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r)) for r in rows
    ]


def markdown_table(rows: list[tuple[str, ...]]) -> list[str]:
    """A markdown table of ``rows`` (the first is the header): the first column left-aligned, the others
    right; a ``|`` in a cell is escaped."""

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

    return [line(rows[0]), "|---" + "|---:" * (len(rows[0]) - 1) + "|", *map(line, rows[1:])]


def verdict_lines(verdicts: Iterable[Verdict]) -> list[str]:
    """Targets for the terminal, one a line: ``MET   name: measured`` (``MISS``, ``FIG ``)."""
    return [f"{TERMINAL[ok]}  {name}: {value}" for name, value, ok in verdicts]


def verdict_items(verdicts: Iterable[Verdict]) -> list[str]:
    """Targets as a markdown list: ``- **met**: name — measured value``."""
    return [f"- {MARKDOWN[ok]}: {name} — measured {value}" for name, value, ok in verdicts]


class Judged(Protocol):
    def invalid(self) -> list[Run]:
        """The runs that had errors or completed no call: they void the run."""
        ...


R = TypeVar("R", bound=Judged)


def finish(
    results: R,
    output: Path,
    text: Callable[[R], str],
    markdown: Callable[[R, dict[str, str]], str],
    chart: Path,
    draw: Callable[[R, Path], None],
) -> int:
    """The end of a run: print ``text(results)``; then, when :meth:`Judged.invalid` names runs, say so
    on stderr, write nothing and return 1 (the run is invalid); otherwise write ``markdown(results,
    machine())`` to ``output``, draw the chart into ``output.parent / chart`` and return 0."""
    print()
    print(text(results))
    bad = results.invalid()
    if bad:
        print(
            f"\nINVALID RUN: {len(bad)} wrk run(s) had errors, e.g. {bad[0].target} c={bad[0].conns} round "
            f"{bad[0].round}: {bad[0].first_error}; {output} not written",
            file=sys.stderr,
        )
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown(results, machine()), encoding="utf-8")
    drawn = output.parent / chart
    draw(results, drawn)
    print()
    for path in (output, drawn):
        print(f"written {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0

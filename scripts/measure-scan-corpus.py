"""Print the detection figures of Bastion's definition scanner on the labelled corpus in
tests/data/scan (recall, false-positive rate, every miss and false positive) and the time to scan a
100-tool tools/list of real definitions.

    .venv/bin/python scripts/measure-scan-corpus.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.scan_corpus import DATA, figures, samples  # noqa: E402

from bastion.scan.definitions import scan_definition  # noqa: E402


def scan_time_ms(rounds: int = 9) -> tuple[float, float, int]:
    """Median wall and CPU milliseconds to scan the first 100 real tools of the reference and
    community lists (each with the 99 others as ``others``), and their JSON size in bytes."""
    tools = [t for folder in ("reference", "community") for path in sorted((DATA / folder).glob("*.json"))
             for t in json.loads(path.read_text("utf-8")).get("tools", [])][:100]  # fmt: skip
    names = [t["name"] for t in tools]
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for tool in tools:
            scan_definition("tool", tool, others=[n for n in names if n != tool["name"]])
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus), len(json.dumps(tools).encode())


def main() -> None:
    measured = samples("reference") + samples("third-party")
    sets = [("reference servers + vulnerable servers (the measured figure)", measured),
            ("community servers (benign)", samples("community")),
            ("attack techniques and hard benign cases written for Bastion", samples("authored"))]  # fmt: skip
    for title, items in sets:
        print("\n".join(figures(items).lines(title)))
    wall, cpu, size = scan_time_ms()
    print(
        f"scanning a 100-tool tools/list ({size:,} bytes of definitions): {wall:.1f} ms wall, {cpu:.1f} ms CPU (median)"
    )


if __name__ == "__main__":
    main()

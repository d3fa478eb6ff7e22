"""prometheus-client's multiprocess mode as ``bastion serve --workers N`` uses it: separate processes
with one ``PROMETHEUS_MULTIPROC_DIR`` each count into it, and one exposition sums them; a process
marked dead leaves its counts but not its live gauges; the directory is emptied at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bastion.metrics import MULTIPROC_ENV, prepare_directory

# One "worker": its own BastionMetrics, counting ``n`` requests and holding ``n`` calls for approval;
# then it prints its pid, or (with "expose") the exposition read from the shared directory.
WORKER = """
import os, sys
from bastion.metrics import BastionMetrics, exposition
metrics = BastionMetrics()
n = int(sys.argv[1])
for _ in range(n):
    metrics.requests.labels("notes", "tools/call", "ok").inc()
    metrics.stage_duration.labels("audit").observe(0.002)
    metrics.approvals_waiting.inc()
metrics.routes.labels("static_secret").set(2)
if sys.argv[2:] == ["expose"]:
    sys.stdout.write(exposition(metrics.registry).decode())
else:
    print(os.getpid())
"""


def _run(directory: Path, *args: str) -> str:
    environment = {**os.environ, MULTIPROC_ENV: str(directory)}
    done = subprocess.run([sys.executable, "-c", WORKER, *args], env=environment, capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    return done.stdout


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_one_scrape_sums_every_process_and_forgets_the_live_gauges_of_dead_ones(tmp_path: Path) -> None:
    from bastion.metrics import worker_exited

    directory = prepare_directory(tmp_path / "data")
    assert directory == (tmp_path / "data" / "metrics").resolve()
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    first, second = int(_run(directory, "2")), int(_run(directory, "3"))
    worker_exited(first, directory)  # the supervisor saw it exit
    worker_exited(second, directory)
    samples = _samples(_run(directory, "4", "expose"))  # a third, live process answers the scrape
    labels = (("method", "tools/call"), ("outcome", "ok"), ("route", "notes"))
    assert samples[("bastion_requests_total", labels)] == 2 + 3 + 4  # counters of dead workers stay
    assert samples[("bastion_stage_duration_seconds_count", (("stage", "audit"),))] == 9
    assert samples[("bastion_approvals_waiting", ())] == 4  # livesum: only the live process's
    assert samples[("bastion_routes", (("credentials", "static_secret"),))] == 2  # livemax, not a sum


def test_the_directory_is_emptied_at_start(tmp_path: Path) -> None:
    directory = prepare_directory(tmp_path)
    _run(directory, "5")
    assert list(directory.iterdir())
    assert prepare_directory(tmp_path) == directory
    assert not list(directory.iterdir())

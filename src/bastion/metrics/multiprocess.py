"""Metrics across the workers of ``bastion serve --workers N``: prometheus-client's multiprocess mode.

The workers share one port (``SO_REUSEPORT``), so a scrape reaches any one of them; each must answer
with the sum over all. The supervisor (``bastion.cli.workers``) makes a fresh private directory,
``<data_dir>/metrics`` (emptied at start: counts of an earlier run must not be added to this
one's), and gives it to every worker as ``PROMETHEUS_MULTIPROC_DIR``. prometheus-client, imported
afterwards in each worker, then keeps every value in a memory-mapped file of that directory, one
per process, and a scrape reads them all (``exposition``): counters and histograms are summed
(those of a worker that exited stay counted, so a counter never goes back), gauges combine by their
``multiprocess_mode`` (``livesum``, ``livemax``: live workers only). When a worker exits the
supervisor calls ``worker_exited``, which removes that worker's live-gauge files.
(https://prometheus.github.io/client_python/multiprocess/)
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from bastion.errors import ConfigError

__all__ = ["MULTIPROC_ENV", "exposition", "prepare_directory", "worker_exited"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable prometheus-client reads, at import, to keep values in files."""


def prepare_directory(data_dir: Path) -> Path:
    """``<data_dir>/metrics`` (absolute), emptied and created with mode 0700; returns it.
    Raises ``ConfigError`` when it cannot be made."""
    path = (data_dir / "metrics").resolve()
    try:
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"metrics: cannot prepare {path} for the workers' metrics: {exc}") from exc
    return path


def worker_exited(pid: int, directory: Path) -> None:
    """Forget the live gauges of the worker ``pid`` (its counters stay counted). Never raises."""
    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition (Prometheus text format 0.0.4): every worker's values summed when
    ``PROMETHEUS_MULTIPROC_DIR`` is set (reads its files), else ``registry``'s."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return generate_latest(registry)
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(combined)

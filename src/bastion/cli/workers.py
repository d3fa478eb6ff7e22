"""``bastion serve --workers N``: N gateway processes on one machine, all listening on one port.

One process runs one event loop, which keeps one core busy at most; a machine's other cores stay
idle. With ``--workers N`` the command becomes a supervisor: it checks the configuration and the
shared stores once, then starts N ``bastion serve`` processes (the workers), each binding the same
address with ``SO_REUSEPORT``, so the kernel spreads new connections over them. Each worker is a
replica: its own stdio upstreams, its own in-process caches.

Replicas need the state that cannot live in one process to be shared, so ``N > 1`` is refused
unless the configuration has (``worker_problems``):

- ``stores.postgres``: the audit log (one SQLite writer per process would fork the hash chain) and
  the revocations;
- ``stores.redis``: the MCP sessions (a session opened through one worker continues on another),
  the session caps and data-flow labels (one count per session, whichever worker its calls reach)
  and the continuations (a 2026-07-28 ``requestState`` retry or a task id issued through one worker
  is continued through another);
- ``counters.redis_url`` when any rate limit or quota applies (counted in memory, a limit of N
  would become N per worker).

The SQLite stores of the data directory (approvals, pins, volume baselines; the authorization
server and the vault too unless in ``stores.postgres``) and the signing keys are files every worker
of the machine shares.

With ``metrics.enabled`` the supervisor empties ``<data_dir>/metrics`` and gives it to the workers
as ``PROMETHEUS_MULTIPROC_DIR``: a scrape of ``/metrics`` on the shared port, whichever worker
answers, sums every worker's counts (``bastion.metrics.multiprocess``).

The supervisor forwards SIGTERM and SIGINT to the workers and waits for them (each drains as
``bastion serve`` does), and SIGHUP, on which each worker reloads its policy sets. If a worker
exits on its own, the supervisor stops the others and exits 1, for the service manager to restart
the whole (no half-capacity gateway that looks healthy).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bastion.config import BastionConfig
from bastion.errors import ConfigError
from bastion.metrics.multiprocess import MULTIPROC_ENV, worker_exited
from bastion.policy import PolicyEngine

__all__ = ["REUSE_PORT_ENV", "run_workers", "worker_problems"]

logger = logging.getLogger(__name__)

REUSE_PORT_ENV = "BASTION_REUSE_PORT"
"""Set (to ``1``) in a worker's environment: bind the listener with ``SO_REUSEPORT``."""
_POLL_S = 0.2
_STOP_TIMEOUT_S = 15.0


def worker_problems(config: BastionConfig) -> list[str]:
    """Why ``config`` cannot run as several workers (empty: it can); see the module docstring.
    Raises ``ConfigError`` when the policies do not load."""
    problems = []
    if config.stores.postgres is None:
        problems.append("stores.postgres is not set (the audit log must stay one chain, the revocations shared)")
    if config.stores.redis is None:
        problems.append(
            "stores.redis is not set (MCP sessions, session caps, data-flow labels and continuations must be "
            "shared by every worker)"
        )
    engine = PolicyEngine.load(config.policy.files, config.policy.schema_file)
    if (config.limits or engine.limited_policy_ids) and config.counters.redis_url is None:
        problems.append("counters.redis_url is not set while rate limits or quotas apply (counted per process)")
    return problems


def run_workers(
    config_path: Path, workers: int, *, host: str | None, port: int | None, log_level: str,
    metrics_dir: Path | None = None,
) -> int:  # fmt: skip
    """Start ``workers`` worker processes of the configuration at ``config_path`` and supervise them
    until a signal or until one exits; returns the exit status for the supervisor. ``metrics_dir``
    (``bastion.metrics.prepare_directory``) is given to the workers as ``PROMETHEUS_MULTIPROC_DIR``,
    so that a scrape of any one sums them all; a worker that exits is marked dead there."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = [sys.executable, "-c", "import sys; from bastion.cli import main; sys.exit(main())", "serve",
               "--config", str(config_path), "--log-level", log_level]  # fmt: skip
    if host is not None:
        command += ["--host", host]
    if port is not None:
        command += ["--port", str(port)]
    environment = {**os.environ, REUSE_PORT_ENV: "1"}
    if metrics_dir is not None:
        environment[MULTIPROC_ENV] = str(metrics_dir)
    children = [subprocess.Popen(command, env=environment) for _ in range(workers)]  # noqa: S603 - our own CLI
    logger.info("started %d workers: %s", workers, ", ".join(str(child.pid) for child in children))
    stopping = False
    dead: set[int] = set()  # the workers marked dead in metrics_dir

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    def reload(_signum: int, _frame: FrameType | None) -> None:  # SIGHUP: each worker reloads its policies
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
    try:
        while True:
            exited = [child for child in children if child.poll() is not None]
            if metrics_dir is not None:
                for child in exited:
                    if child.pid not in dead:
                        dead.add(child.pid)
                        worker_exited(child.pid, metrics_dir)
            if stopping:
                if len(exited) == len(children):
                    return 0
            elif exited:
                logger.error("worker %d exited with %s; stopping the others", exited[0].pid, exited[0].returncode)
                _stop(children)
                return 1
            time.sleep(_POLL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(children: Sequence[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def check_workers(config: BastionConfig, workers: int) -> None:
    """Raise ``ConfigError`` naming every reason ``config`` cannot run as ``workers`` workers."""
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if workers == 1:
        return
    problems = worker_problems(config)
    if problems:
        raise ConfigError(f"--workers {workers} needs every state the workers must share to be shared: "
                          + "; ".join(problems) + " (with the embedded default, run one worker)")  # fmt: skip

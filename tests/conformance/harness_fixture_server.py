"""Starting the conformance fixture server (``fixture_server.py``) in a child process for a run.

``running_fixture_server()`` starts ``fixture_server.py --port 0`` with the current Python, waits
for the ``READY <url>`` line it prints once listening, yields that URL and stops the server's
process group on exit (SIGTERM, then SIGKILL after 10 s). Used by ``harness.py --start-fixture``,
the conformance tests' ``fixture_server_url`` and the end-to-end tests that put Bastion in front
of the fixture.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

from harness_cli_runner import kill_group
from harness_suite import HERE

FIXTURE_SERVER = HERE / "fixture_server.py"


@contextlib.contextmanager
def running_fixture_server(*extra_args: str, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """Start ``fixture_server.py --port 0`` and yield its MCP URL; stop it on exit.

    The server's stderr goes to a temporary file (a pipe nobody reads could fill and block it);
    it is included in the error when the server does not start.
    """
    with (
        tempfile.TemporaryFile(mode="w+") as errfile,
        subprocess.Popen(
            [sys.executable, str(FIXTURE_SERVER), "--port", "0", *extra_args],
            stdout=subprocess.PIPE,
            stderr=errfile,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        ) as proc,
    ):
        url, reader = _await_ready(proc, startup_timeout_s)
        try:
            if url is None:
                errfile.seek(0)
                raise RuntimeError(f"fixture server did not start: {errfile.read()[-2000:]}")
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(proc)
            reader.join(timeout=10)  # stdout hits EOF once the server is gone


def _await_ready(proc: subprocess.Popen[str], timeout_s: float) -> tuple[str | None, threading.Thread]:
    """Wait for the ``READY <url>`` line; keep draining stdout afterwards so it never blocks."""
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # stdout closed at shutdown
            for line in proc.stdout:
                if line.startswith("READY "):
                    found.put(line.split(None, 1)[1].strip())
        found.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        return found.get(timeout=timeout_s), reader
    except queue.Empty:
        return None, reader

"""The benchmark's child processes at the OS level: a free loopback port, waiting for a readiness
probe, stopping, a server process with its log (:class:`Server`), and CPU time (whole process, whole
process tree, per thread, of reaped children) from ``/proc``."""

from __future__ import annotations

import http.client
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Prerequisite(Exception):
    """Something the benchmark needs is missing or unusable: reported, and the run exits 2."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Poll ``GET path`` until it answers 200; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before :{port}{path} came up")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise TimeoutError(f":{port}{path} did not come up in {timeout_s}s")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """A child process serving HTTP on a loopback port, its output in ``<workdir>/<name>.log``: the
    part the benchmark's servers share (``targets.BastionServer``, ``peer_targets.PeerServer``, both
    dataclasses that declare these attributes as fields)."""

    name: str
    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    def spawn(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        """Start ``args`` (in ``cwd``, default the working directory) with output to :attr:`log_path`."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd or self.workdir)

    def wait_ready(self, path: str, timeout_s: float = 30.0) -> None:
        """Wait for ``GET path`` to answer 200 (:func:`wait_http`); on failure raise ``RuntimeError``
        with the end of the log."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        try:
            wait_http(self.port, path, self.proc, timeout_s)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{self.name}: {exc}\n--- {self.name} log ---\n{self.log()}") from exc

    def log(self) -> str:
        """The last 4,000 characters of the log ("" before it exists)."""
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def _stat(path: str) -> list[str]:
    """The fields of a ``/proc`` stat file after the command name: ``[1]`` is the ppid, ``[11]`` to
    ``[14]`` utime, stime, cutime and cstime in clock ticks (proc(5) numbers them from 1, pid first)."""
    with open(path, encoding="ascii") as handle:
        text = handle.read()
    return text[text.rindex(")") + 2 :].split()


def _ticks(fields: list[str], *, system_only: bool = False, reaped: bool = False) -> int:
    """``utime + stime`` (or ``stime`` alone) of :func:`_stat` fields, with ``reaped`` plus the same of
    the children the process has waited for (``cutime + cstime``, or ``cstime``)."""
    own = int(fields[12]) if system_only else int(fields[11]) + int(fields[12])
    if not reaped:
        return own
    return own + (int(fields[14]) if system_only else int(fields[13]) + int(fields[14]))


def cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    """CPU time (user + system, or system alone; all threads) of process ``pid`` in seconds."""
    return _ticks(_stat(f"/proc/{pid}/stat"), system_only=system_only) / CLK_TCK


def tree_cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    """CPU time (user + system, or system alone) of process ``pid`` and all its descendants in seconds:
    the live processes' own time plus what each has collected from the children it reaped, so a
    worker that exited is still counted. Raises ``OSError`` when ``pid`` is gone."""
    stats: dict[int, tuple[int, int]] = {}  # pid -> (ppid, ticks)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat(f"/proc/{entry}/stat")
            except OSError:  # exited meanwhile
                continue
            stats[int(entry)] = (int(fields[1]), _ticks(fields, system_only=system_only, reaped=True))
    if pid not in stats:
        raise OSError(f"no process {pid}")
    children: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        children.setdefault(parent, []).append(child)
    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        ticks += stats[current][1]
        todo.extend(children.get(current, ()))
    return ticks / CLK_TCK


def thread_cpu_seconds(pid: int) -> tuple[float, float, float]:
    """``(main thread, other threads, other threads' system part)`` CPU seconds of ``pid`` (threads alive now)."""
    main = other = other_sys = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = _stat(f"/proc/{pid}/task/{task}/stat")
            ticks, system = _ticks(fields), _ticks(fields, system_only=True)
        except (OSError, ValueError):
            continue
        if int(task) == pid:
            main += ticks
        else:
            other += ticks
            other_sys += system
    return main / CLK_TCK, other / CLK_TCK, other_sys / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

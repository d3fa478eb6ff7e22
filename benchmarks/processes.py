"""The benchmark's child processes at the OS level: a free loopback port, waiting for a readiness
probe, stopping, and CPU time (whole process, per thread, of reaped children) from ``/proc``."""

from __future__ import annotations

import http.client
import os
import resource
import signal
import socket
import subprocess
import time

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


def _stat_ticks(path: str, *, system_only: bool = False) -> int:
    """``utime + stime`` (or ``stime`` alone) in clock ticks from a /proc stat file."""
    with open(path, encoding="ascii") as handle:
        text = handle.read()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[12]) if system_only else int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    """CPU time (user + system, or system alone; all threads) of process ``pid`` in seconds."""
    return _stat_ticks(f"/proc/{pid}/stat", system_only=system_only) / CLK_TCK


def thread_cpu_seconds(pid: int) -> tuple[float, float, float]:
    """``(main thread, other threads, other threads' system part)`` CPU seconds of ``pid`` (threads alive now)."""
    main = other = other_sys = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{task}/stat"
        try:
            ticks = _stat_ticks(path)
            system = _stat_ticks(path, system_only=True)
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

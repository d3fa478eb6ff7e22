"""``bastion demo``: the whole scripted demo as a subprocess (it starts its own servers), and every way it
ends (done, SIGTERM, SIGHUP, a failed start) leaving no process and no temporary directory behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from tests.support.bastion_process import BASTION, free_port, stop
from tests.support.e2e_helpers import child_processes, is_gone, wait_until

pytestmark = pytest.mark.e2e


def test_demo_once_exits_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [BASTION, "demo", "--once", "--port", str(free_port()), "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FAIL" not in result.stdout, output
    assert result.stdout.count("PASS") >= 7, output
    assert "0 failed" in result.stdout
    # It left a verifiable audit log behind.
    verify = subprocess.run(
        [BASTION, "audit", "verify", "--db", str(tmp_path / "demo" / "data" / "bastion.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


# --- every way the demo ends cleans up ---------------------------------------------------------------
#
# The demo keeps its data (signing keys, users file with password hashes, audit log) in a temporary
# directory and runs the notes server and the reference servers as child processes. ``TMPDIR`` points
# at a directory of the test's own, so the demo's temporary directory is found there, and the processes
# that inherit the demo's environment (the notes server) carry that ``TMPDIR``: found even after they
# were orphaned. The stdio reference servers get an environment of their own, so the test notes the
# demo's children while it serves and checks each of them.


def demo_leftovers(scratch: Path) -> list[str]:
    """Live processes started with ``TMPDIR=scratch`` (the demo and anything it started), as
    ``"pid command line"``, and what is left in ``scratch``."""
    marker = f"TMPDIR={scratch}".encode()
    found = [str(path) for path in scratch.iterdir()]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or is_gone(int(entry.name)):
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended while being read
            continue
        if marker in environment:
            found.append(f"{entry.name} {command}")
    return found


def start_demo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """``bastion demo`` with its temporary directory under ``tmp_path/tmp``: the process, that
    directory and the file its output goes to."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    output = tmp_path / "demo.out"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [BASTION, "demo", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "COLUMNS": "200", "TMPDIR": str(scratch)},
        )
    return proc, scratch, output


def notes_server_of(proc: subprocess.Popen[bytes]) -> int | None:
    found = [pid for pid, cmd in child_processes(proc.pid).items() if "bastion.demo.notes_server" in cmd]
    return found[0] if found else None


def serving_children(proc: subprocess.Popen[bytes]) -> dict[int, str]:
    """The demo's children once it serves: the notes server and the two stdio reference servers."""
    children = child_processes(proc.pid)
    commands = " ".join(children.values())
    done = all(name in commands for name in ("bastion.demo.notes_server", "mcp-server-time", "mcp-server-git"))
    return children if done else {}


@pytest.mark.parametrize(
    ("signum", "when"),
    [
        pytest.param(signal.SIGTERM, "serving", id="sigterm-while-serving"),
        pytest.param(signal.SIGHUP, "serving", id="sighup-while-serving"),
        pytest.param(signal.SIGTERM, "starting", id="sigterm-during-start-up"),
    ],
)
def test_a_demo_stopped_by_a_signal_leaves_no_process_and_no_directory(
    tmp_path: Path, signum: signal.Signals, when: str
) -> None:
    proc, scratch, output = start_demo(tmp_path, "--port", str(free_port()))
    try:
        children = {wait_until(lambda: notes_server_of(proc), timeout_s=60): "the notes server"}
        if when == "serving":
            wait_until(lambda: "Press Ctrl-C to stop" in output.read_text(), timeout_s=120)
            children = wait_until(lambda: serving_children(proc))
            [workdir] = scratch.iterdir()
            assert (workdir / "users.yaml").is_file()
            assert (workdir / "data" / "bastion.db").is_file()
        proc.send_signal(signum)
        status = proc.wait(30)
    finally:
        stop(proc)
    log = output.read_text()
    assert {pid: cmd for pid, cmd in children.items() if not is_gone(pid)} == {}, log
    assert demo_leftovers(scratch) == [], log
    assert status == 0, log  # stopped as Ctrl-C stops it


def test_a_demo_that_fails_to_start_leaves_no_process_and_no_directory(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the gateway's port is in use: uvicorn cannot listen
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc, scratch, output = start_demo(tmp_path, "--once", "--port", str(taken.getsockname()[1]))
        try:
            status = proc.wait(120)
        finally:
            stop(proc)
    log = output.read_text()
    assert status != 0, log
    assert demo_leftovers(scratch) == [], log

"""The py-spy profile of the default Bastion under load: recorded (native frames when possible) and
parsed into busy samples by thread, library, pipeline step, own frame and function on the stack."""

from __future__ import annotations

import linecache
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from load import Run, measure
from scenario import BIN, DEFAULT

if TYPE_CHECKING:
    from targets import Targets

STEP_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    # The deepest frame of a sample that matches a rule (frame text + its source line) names the step.
    "main": (
        ("RevocationList.is_revoked", "authenticate: revocation check (in memory, stamp file every 50 ms)"),
        ("AuthenticateStage.run", "authenticate: token (cached verify)"),
        ("TransportStage.run", "transport: checks + JSON parse"),
        ("SessionStage.run", "session: lookup"),
        ("ClassifyStage.run", "classify"),
        ("AuthorizeStage.run", "authorize: Cedar decision (context, entities, cedarpy)"),
        ("SQLiteAuditLog._put", "audit: enqueue (SimpleQueue.put, wakes the writer)"),
        ("AuditStage.run", "audit: decision record (decision_body, await the commit)"),
        ("AuditStage.record_outcome", "audit: outcome record (outcome_body)"),
        ("_settle (bastion/audit/store.py", "audit: resume the waiting append (callback from the writer)"),
        ("HttpUpstream._read_capped", "forward: read the response body (aiohttp StreamReader)"),
        ("HttpUpstream.send", "forward: upstream request (pooled connection, aiohttp writer, await the headers)"),
        ("aiohttp/client_proto.py", "forward: aiohttp response parsing (protocol callback)"),
        ("HttpForwardStage.run", "forward: session mapping + reply JSON parse"),
        ("InspectStage.run", "inspect"),
        ("send_reply", "reply: write to uvicorn"),
        ("read_request", "request: headers + body"),
        ("Pipeline.", "pipeline runner glue"),
        ("McpEndpoint.__call__", "endpoint glue (Exchange, ...)"),
        ("GatewayApp.__call__", "app dispatch (GatewayApp)"),
        ("httptools_impl.py", "uvicorn: HTTP/1.1 protocol (httptools), incl. the response write"),
        ("Runner.run", "event loop: uvloop, epoll, socket I/O (native)"),
    ),
    "other": (  # the audit writer thread
        ("seal (bastion/audit/chain.py", "audit writer: seal (canonical JSON + SHA-256)"),
        ("index_columns", "audit writer: index columns"),
        ("SQLiteAuditLog._settle", "audit writer: wake the waiting appends (call_soon_threadsafe)"),
        ('conn.execute("COMMIT")', "audit writer: SQLite COMMIT (WAL write, fsync when synchronous=full)"),
        ('conn.execute("BEGIN IMMEDIATE")', "audit writer: SQLite BEGIN"),
        ("executemany", "audit writer: SQLite INSERT"),
        ("SQLiteAuditLog._commit", "audit writer: batch bookkeeping"),
        ("SQLiteAuditLog._next_batch", "audit writer: queue get (wake-up)"),
        ("SQLiteAuditLog._serve", "audit writer: loop"),
    ),
}


WAIT_LEAVES = frozenset(
    {
        "epoll_pwait", "epoll_pwait2", "epoll_wait", "select", "pselect", "nanosleep", "clock_nanosleep",
        "sem_wait", "sem_timedwait", "sem_clockwait", "pthread_cond_wait", "pthread_cond_timedwait",
        "pthread_cond_clockwait", "__futex_abstimed_wait_common", "__lll_lock_wait", "fdatasync", "fsync",
    }
)  # fmt: skip
"""Native leaf functions where a thread waits (idle poll, GIL/lock/queue waits, disk flush), not computes."""


def _wait(leaf: str) -> str | None:
    """The name of the wait when a native ``leaf`` frame is one (see ``WAIT_LEAVES``), else None."""
    if _is_python(leaf):
        return None
    name = leaf.split(" (")[0]
    if name in WAIT_LEAVES:
        return name
    if name.startswith("0x") and "libc.so" in _where(leaf):
        return "futex wait (GIL, lock, queue; unresolved libc)"
    return None


GROUPS: tuple[tuple[str, str], ...] = (
    ("aiohttp", "aiohttp (upstream HTTP client; with yarl, multidict, propcache)"),
    ("uvicorn", "uvicorn + httptools (downstream HTTP server)"),
    ("cedarpy", "cedarpy (the Cedar policy decision)"),
    ("sqlite", "sqlite3 / audit writer thread (seal, INSERT, COMMIT)"),
    ("bastion", "our pipeline (`bastion.*`, with the stdlib it calls: json, hashlib, ...)"),
    ("loop", "event loop (uvloop/libuv dispatch, epoll, asyncio)"),
    ("other", "other (CPython runtime: the cyclic garbage collector, unattributed native code)"),
)
"""The libraries Bastion's CPU is attributed to (key, label), in display order."""

_PY_GROUPS = {
    "aiohttp": "aiohttp", "yarl": "aiohttp", "multidict": "aiohttp", "propcache": "aiohttp",
    "aiohappyeyeballs": "aiohttp", "aiosignal": "aiohttp", "frozenlist": "aiohttp",
    "uvicorn": "uvicorn", "httptools": "uvicorn", "starlette": "uvicorn",
    "cedarpy": "cedarpy", "sqlite3": "sqlite", "bastion": "bastion", "asyncio": "loop", "uvloop": "loop",
}  # fmt: skip
"""Python packages (first path component of a py-spy frame) -> group."""

_NATIVE_FILES = {
    # uvloop (Cython) and the libuv it embeds; CPython's _asyncio
    "loop.c": "loop", "core.c": "loop", "linux.c": "loop", "stream.c": "loop", "loop-watcher.c": "loop",
    "queue.h": "loop", "uv-common.c": "loop", "timer.c": "loop", "async.c": "loop", "poll.c": "loop",
    "tcp.c": "loop", "_asynciomodule.c": "loop", "_asynciomodule.c.h": "loop",
    # httptools (llhttp)
    "parser.c": "uvicorn", "llhttp.c": "uvicorn", "url_parser.c": "uvicorn", "api.c": "uvicorn", "http.c": "uvicorn",
    # aiohttp's C parser and writer, multidict, yarl, propcache
    "_http_parser.c": "aiohttp", "_http_writer.c": "aiohttp", "_multidict.c": "aiohttp", "hashtable.h": "aiohttp",
    "_helpers_c.c": "aiohttp", "_quoting_c.c": "aiohttp",
    # CPython's _sqlite3 module
    "cursor.c": "sqlite", "connection.c": "sqlite", "connection.c.h": "sqlite", "statement.c": "sqlite",
    "cursor.c.h": "sqlite",
}  # fmt: skip
"""Native source files (as py-spy names them with debug info) -> group; a heuristic."""

_NATIVE_LIBS = (
    ("libsqlite3", "sqlite"), ("cedarpy", "cedarpy"), ("aiohttp", "aiohttp"), ("multidict", "aiohttp"),
    ("yarl", "aiohttp"), ("propcache", "aiohttp"), ("httptools", "uvicorn"), ("uvloop", "loop"), ("libuv", "loop"),
)  # fmt: skip
"""Native shared objects (substring of the path py-spy shows) -> group."""

_ENTRY = (
    "bastion/cli/", "uvicorn/server.py", "uvicorn/_compat.py", "uvicorn/main.py", "asyncio/runners.py",
    "typer/", "click/", "threading.py", "(bastion:",
)  # fmt: skip
"""Frames below the event loop (process entry point, thread bootstrap): never a sample's owner."""


def _frame_group(frame: str) -> str | None:
    """The group of one frame ("entry" for an entry-point frame), or None when it names none."""
    if any(marker in frame for marker in _ENTRY):
        return "entry"
    where = _where(frame)
    if _is_python(frame):
        return _PY_GROUPS.get(where.rpartition(":")[0].split("/")[0].removesuffix(".py"))
    if ".so" in where:
        return next((group for key, group in _NATIVE_LIBS if key in where), None)
    return _NATIVE_FILES.get(where.rpartition(":")[0] or where)


def sample_group(frames: list[str], kind: str) -> str:
    """The library a busy sample is charged to: everything on the audit writer thread is "sqlite";
    on the event loop, the innermost frame of a listed library. Event-loop frames are transparent
    (a socket write uvloop makes for aiohttp is aiohttp's); a sample that reaches the entry point
    through them alone is the loop's; garbage collection is "other" wherever it was triggered."""
    if kind != "main":
        return "sqlite"
    through_loop = False
    for frame in reversed(frames):
        if frame.startswith("gc_collect"):  # the cyclic GC runs wherever an allocation triggers it
            return "other"
        group = _frame_group(frame)
        if group == "entry":
            break
        if group == "loop":
            through_loop = True
        elif group is not None:
            return group
    return "loop" if through_loop else "other"


def _where(frame: str) -> str:
    """``path:line`` (Python), ``file.c:line`` or ``lib.so`` (native) of a py-spy frame."""
    try:
        return frame[frame.rindex("(") + 1 : frame.rindex(")")]
    except ValueError:
        return ""


def _is_python(frame: str) -> bool:
    return ".py:" in _where(frame) or "<frozen" in frame


def _function(frame: str) -> str:
    """``func (path.py)``: a Python frame without its line number."""
    where = _where(frame)
    return f"{frame[: frame.rindex('(')].strip()} ({where.rpartition(':')[0] or where})"


def _source_line(frame: str) -> str:
    """The source text of ``func (path.py:line)`` when the file can be found on sys.path."""
    path, _, line = _where(frame).rpartition(":")
    if not path.endswith(".py") or not line.isdigit():
        return ""
    for base in sys.path:
        candidate = Path(base) / path
        if candidate.is_file():
            return linecache.getline(str(candidate), int(line)).strip()
    return ""


@dataclass
class Profile:
    """A py-spy profile of Bastion: busy samples per thread kind ("main" / "other"), by group,
    by pipeline step, by own frame and by function on the stack (total time)."""

    samples: Counter[str] = field(default_factory=Counter)
    waits: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    groups: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    steps: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    own: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    own_group: dict[str, str] = field(default_factory=dict)
    total: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    total_group: dict[str, str] = field(default_factory=dict)
    native: bool = False
    note: str = ""


def parse_profile(raw: Path, *, native: bool) -> Profile:
    """Read py-spy's ``--format raw`` output (``thread;frame;...;leaf count`` per line)."""
    profile = Profile(native=native)
    sources: dict[str, str] = {}

    def source(frame: str) -> str:
        if frame not in sources:
            sources[frame] = _source_line(frame)
        return sources[frame]

    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        kind = "main" if "MainThread" in frames[0] else "other"
        n = int(count)
        leaf = frames[-1]
        wait = _wait(leaf) if native else None
        if wait is not None:
            profile.waits[kind][wait] += n
            continue
        profile.samples[kind] += n
        group = sample_group(frames[1:], kind)
        profile.groups[kind][group] += n
        step = "other"
        for frame in reversed(frames[1:]):
            text = f"{frame} {source(frame)}"
            label = next((name for key, name in STEP_RULES[kind] if key in text), None)
            if label is not None:
                step = label
                break
        profile.steps[kind][step] += n
        if _is_python(leaf):
            own = f"{leaf} `{source(leaf)}`" if source(leaf) else leaf
        else:  # a native leaf: name its nearest Python caller
            caller = next((f for f in reversed(frames) if _is_python(f)), "")
            own = f"{leaf} ← {caller}" if caller else leaf
        profile.own[kind][own] += n
        profile.own_group.setdefault(own, group)
        seen: set[str] = set()
        for frame in frames[1:]:  # total time: each Python function on the stack once
            if not _is_python(frame) or _frame_group(frame) == "entry":
                continue
            function = _function(frame)
            if function not in seen:
                seen.add(function)
                profile.total[kind][function] += n
                profile.total_group.setdefault(function, _frame_group(frame) or "stdlib")
    return profile


def find_py_spy() -> str | None:
    for candidate in (BIN / "py-spy", shutil.which("py-spy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    print("py-spy is missing: installing it into this venv (pip install py-spy)", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "py-spy"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0 and (BIN / "py-spy").exists():
        return str(BIN / "py-spy")
    print(f"py-spy could not be installed: {done.stderr.strip()[-300:]}", flush=True)
    return None


def profile_bastion(targets: Targets, conns: int, duration_s: float, out: Path) -> tuple[Profile, Run | None]:
    """py-spy record (native frames when possible) of the default Bastion while wrk drives it at ``conns``."""
    py_spy = find_py_spy()
    if py_spy is None:
        return Profile(note="py-spy unavailable: no profile"), None
    errors = ""
    for native in (True, False):
        out.unlink(missing_ok=True)
        cmd = [
            py_spy,
            "record",
            "--pid",
            str(targets.default.pid),
            "--duration",
            f"{duration_s:g}",
            "--rate",
            "200",
            "--threads",
            "--format",
            "raw",
            "-o",
            str(out),
        ]
        record = subprocess.Popen(
            [*cmd, "--native"] if native else cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        time.sleep(0.5)
        run = measure(targets.endpoint(DEFAULT), conns, duration_s + 1.0, 0)
        output = record.communicate(timeout=60)[0].decode(errors="replace")
        if record.returncode == 0 and out.exists() and out.stat().st_size:
            return parse_profile(out, native=native), run
        errors = f"py-spy failed ({record.returncode}): {output.strip()[-300:]}"
    return Profile(note=errors), None

"""Cost of audit export per record (issue 17): what the gateway's process spends to follow its log.

Run: ``.venv/bin/python benchmarks/export_cost.py [--records 20000]``. Fills a SQLite audit log with
decision records like a ``tools/call``'s (about 700 bytes each), then exports all of it, in batches
of 500, three times per destination, each from an empty cursor:

- ``memory``: the feed and the cursor alone (the floor: read, parse nothing, fsync the cursor);
- ``file``: the JSON-lines sink (append, fsync per batch, rotation at 100 MB);
- ``syslog``: RFC 5424 over TCP to Debian's rsyslogd (its own process, writing to a file);
- ``otlp``: OTLP/HTTP protobuf to a receiver in its own process (decodes each request, answers 200).

Prints process CPU (this process only: the receivers run apart) and wall time per record, in
microseconds. Off the request path: the exporter runs as a background task on the gateway's loop
and in worker threads, so this is CPU the gateway shares with its calls, not latency a call waits.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from bastion.audit.export import Exporter, MemorySink, Sink
from bastion.audit.export_feed import ExportCursor, LocalSource, ReaderFeed
from bastion.audit.export_file import FileSink
from bastion.audit.export_otlp import OtlpSink
from bastion.audit.export_syslog import SyslogSink
from bastion.audit.query import SQLiteAuditReader
from bastion.audit.record import Decision, DecisionEvent
from bastion.audit.store_sqlite import SQLiteAuditLog
from bastion.principal import Principal

RSYSLOGD = "/usr/sbin/rsyslogd"
ALICE = Principal(kind="User", sub="alice", issuer="https://gw.test", auth_method="bastion_jwt",
                  expires_at=2_000_000_000, groups=("eng",))  # fmt: skip
RECEIVER = textwrap.dedent("""
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            ExportLogsServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        def log_message(self, *a): pass
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


async def _fill(db: Path, n: int) -> None:
    async with SQLiteAuditLog(db, synchronous="normal") as log:
        for i in range(n):
            log.append_nowait(DecisionEvent.create(
                route="github", method="tools/call", target="create_issue", principal=ALICE, session="s-1",
                arguments={"repo": "acme/api", "title": f"issue {i}", "body": "x" * 200},
                decision=Decision(effect="allow", policy_ids=("p1",)),
            ))  # fmt: skip


async def _export(db: Path, sink: Sink, cursors: Path) -> tuple[float, float, int]:
    source = LocalSource(ReaderFeed(SQLiteAuditReader(db)), ExportCursor.load(cursors, "bench"))
    exporter = Exporter("bench", source, sink)
    cpu, wall = time.process_time(), time.perf_counter()
    sent = await exporter.export_pending()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await exporter.aclose()
    return cpu, wall, sent


def _rsyslog(work: Path, port: int) -> subprocess.Popen[bytes]:
    (work / "rs").mkdir()
    conf = work / "rs" / "rsyslog.conf"
    conf.write_text(f'global(workDirectory="{work / "rs"}" maxMessageSize="1m")\nmodule(load="imtcp")\n'
                    f'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
                    f'action(type="omfile" file="{work / "rs" / "out.log"}")\n')  # fmt: skip
    return subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(work / "rs" / "pid")])


def main(records: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bastion-export-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        db = work / "bastion.db"
        asyncio.run(_fill(db, records))
        otlp_port = _port()
        processes.append(subprocess.Popen([sys.executable, "-c", RECEIVER, str(otlp_port)]))
        sinks: dict[str, Callable[[], Sink]] = {
            "memory": MemorySink,
            "file": lambda: FileSink(work / "out" / "audit.jsonl", max_bytes=100 * 1000**2, keep=2),
            "otlp": lambda: OtlpSink(f"http://127.0.0.1:{otlp_port}/v1/logs"),
        }
        if Path(RSYSLOGD).exists():
            syslog_port = _port()
            processes.append(_rsyslog(work, syslog_port))
            _wait_port(syslog_port)
            sinks["syslog"] = lambda: SyslogSink("127.0.0.1", syslog_port, tls=False)
        _wait_port(otlp_port)
        print(f"{records} records, batches of 500; microseconds per record (this process's CPU / wall), 3 runs")
        for name, make in sinks.items():
            runs = []
            for _ in range(3):
                shutil.rmtree(work / "out", ignore_errors=True)
                shutil.rmtree(work / "cursors", ignore_errors=True)
                (work / "cursors").mkdir()
                cpu, wall, sent = asyncio.run(_export(db, make(), work / "cursors"))
                if sent != records:
                    raise RuntimeError(f"{name}: {sent} of {records} records exported")
                runs.append(f"{cpu / sent * 1e6:6.1f} / {wall / sent * 1e6:6.1f}")
            print(f"  {name:7} " + "   ".join(runs))
    finally:
        for proc in processes:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    main(parser.parse_args().records)

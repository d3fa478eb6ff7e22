"""Real log receivers for the audit export tests, on loopback: rsyslog from Debian (``PrivateRsyslog``,
``make rsyslog`` installs it) and an OTLP/HTTP logs receiver (``OtlpReceiver``) decoding each
``ExportLogsServiceRequest`` with opentelemetry-proto. Both can be stopped and started again on
the same port, as an outage would."""

from __future__ import annotations

import re
import socket
import subprocess
import sysconfig
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse

from tests.support.bastion_process import free_port, stop
from tests.support.pki import Pki

RSYSLOGD = "/usr/sbin/rsyslogd"
RSYSLOG_OPENSSL = f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}/rsyslog/lmnsd_ossl.so"
_SEQ = re.compile(rb' seq="(\d+)"')


def _wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


class PrivateRsyslog:
    """An ``rsyslogd`` of the test's own (its config, pid file and work directory in ``workdir``, no
    root needed) listening on TCP 127.0.0.1:``port`` (octet-counted or LF-framed: imtcp takes both),
    or TLS with ``tls``'s ``localhost`` certificate, and writing each message in RFC 5424 form to
    ``workdir/received.log``."""

    def __init__(self, workdir: Path, port: int | None = None, *, tls: Pki | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.output = workdir / "received.log"
        (workdir / "work").mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "rsyslog.conf"
        driver = ""
        imtcp = 'module(load="imtcp")\n'
        if tls is not None:  # RFC 5425 with rsyslog's OpenSSL driver (rsyslog-openssl), no client certificate
            driver = (f' DefaultNetstreamDriver="ossl" DefaultNetstreamDriverCAFile="{tls.ca_file}"'
                      f' DefaultNetstreamDriverCertFile="{tls.localhost.certfile}"'
                      f' DefaultNetstreamDriverKeyFile="{tls.localhost.keyfile}"')  # fmt: skip
            imtcp = 'module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")\n'
        self.conf.write_text(
            f'global(workDirectory="{workdir / "work"}" maxMessageSize="1m"{driver})\n'
            + imtcp
            + f'input(type="imtcp" port="{self.port}" address="127.0.0.1")\n'
            f'action(type="omfile" file="{self.output}" template="RSYSLOG_SyslogProtocol23Format")\n',
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRsyslog:
        log = (self.workdir / "rsyslogd.log").open("ab")
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.workdir / "rsyslogd.pid")],
                                     stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        _wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def seqs(self) -> list[int]:
        """The ``seq`` of every message received so far, in arrival order (duplicates kept)."""
        if not self.output.exists():
            return []
        return [int(m[1]) for line in self.output.read_bytes().splitlines() if (m := _SEQ.search(line))]

    def messages(self) -> list[bytes]:
        return self.output.read_bytes().splitlines() if self.output.exists() else []


class OtlpReceiver:
    """An OTLP/HTTP logs receiver on 127.0.0.1:``port`` (``POST /v1/logs``, protobuf): each request is
    decoded with opentelemetry-proto and its log records kept in ``records`` (as dicts: ``seq``,
    ``hash``, ``body``, ``event_name``, ``severity``); the answer is an ``ExportLogsServiceResponse``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.records: list[dict[str, Any]] = []
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/logs"

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/logs" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(415 if self.path == "/v1/logs" else 404)
                    return
                request = ExportLogsServiceRequest.FromString(body)
                for resource_logs in request.resource_logs:
                    for scope in resource_logs.scope_logs:
                        for log in scope.log_records:
                            attributes = {kv.key: kv.value for kv in log.attributes}
                            receiver.records.append({
                                "seq": attributes["bastion.audit.seq"].int_value,
                                "hash": attributes["bastion.audit.hash"].string_value,
                                "body": log.body.string_value, "event_name": log.event_name,
                                "severity": log.severity_text,
                            })  # fmt: skip
                receiver.requests += 1
                answer = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

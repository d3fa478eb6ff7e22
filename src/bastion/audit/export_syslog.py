"""The syslog sink: each record as an RFC 5424 message over TCP or TLS, octet-counted.

Message (RFC 5424 section 6, ``format_message``, sans-IO)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID seq="N" hash="H"] BOM{record JSON}

- PRI (6.2.1) is ``facility * 8 + severity``: a deny decision is 4 (warning), every other record 6
  (informational); VERSION is 1.
- TIMESTAMP (6.2.3) is the record's ``time`` (RFC 3339 UTC with microseconds, which 6.2.3.1 allows).
- HOSTNAME (6.2.4), APP-NAME (6.2.5), PROCID (6.2.6): this machine's name, ``app_name``, the pid;
  each printable US-ASCII of its bounded length, else the NILVALUE ``-``.
- MSGID (6.2.7) is the record's ``kind`` (``decision`` or ``outcome``).
- STRUCTURED-DATA (6.3): one element ``sd_id`` with ``seq`` and ``hash``, the de-duplication key,
  PARAM-VALUEs escaped as 6.3.3 says (``"``, ``\\`` and ``]`` preceded by ``\\``).
- MSG (6.4): the stored record's JSON, UTF-8, so it starts with the BOM.

Transport: TCP with octet-counting framing (RFC 6587 section 3.4.1, ``MSG-LEN SP SYSLOG-MSG``), or
TLS with the same framing (RFC 5425 section 4.3), certificate and host name checked against the
system's trust store or ``ca_file`` (RFC 5425 section 5.2; TLS 1.2 at least).

Delivery: plain syslog has no acknowledgement, so the sink cannot know that the receiver kept a
message; it only knows that the connection took it. A receiver that stopped or restarted closed its
end, which the sink sees before each batch (end of stream on the connection: it reconnects, and the
batch goes to the new connection) and again just after it (``settle_s``): a batch written into a
connection found closed then is sent again. That covers a receiver that goes away and comes back
(the e2e test stops rsyslog mid-run); a receiver that crashes with messages in its own buffers can
still lose them, which only an acknowledged protocol rules out (RELP; the OTLP sink acknowledges).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

from bastion.audit.export import ExportRecord, SinkUnavailable

__all__ = ["SyslogSink", "format_message", "frame"]

_BOM = b"\xef\xbb\xbf"
_PRINTUSASCII = re.compile(r"[!-~]+")  # PRINTUSASCII, %d33-126 (RFC 5424 section 6)
_SEVERITY_WARNING = 4
_SEVERITY_INFO = 6
_CONNECT_TIMEOUT_S = 10.0
_WRITE_TIMEOUT_S = 30.0


def _field(value: str, limit: int) -> str:
    """A header field (RFC 5424 6.2.4-6.2.7): 1 to ``limit`` printable US-ASCII characters, else ``-``."""
    return value if len(value) <= limit and _PRINTUSASCII.fullmatch(value) else "-"


def _param(value: str) -> str:
    """A PARAM-VALUE with ``"``, ``\\`` and ``]`` escaped (RFC 5424 section 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_message(
    record: ExportRecord, *, facility: int, app_name: str, sd_id: str, hostname: str, procid: str
) -> bytes:
    """``record`` as one RFC 5424 SYSLOG-MSG (module docstring), without framing."""
    body = record.record
    decision = body.get("decision")
    denied = body.get("kind") == "decision" and isinstance(decision, dict) and decision.get("effect") == "deny"
    pri = facility * 8 + (_SEVERITY_WARNING if denied else _SEVERITY_INFO)
    stamp = body.get("time")
    timestamp = stamp if isinstance(stamp, str) and _field(stamp, 32) != "-" else "-"
    header = " ".join((
        f"<{pri}>1", timestamp, _field(hostname, 255), _field(app_name, 48), _field(procid, 128),
        _field(str(body.get("kind", "")), 32),
    ))  # fmt: skip
    sd = f'[{sd_id} seq="{record.seq}" hash="{_param(record.hash)}"]'
    return f"{header} {sd} ".encode("ascii") + _BOM + record.text.encode("utf-8")


def frame(message: bytes) -> bytes:
    """Octet-counting framing: ``MSG-LEN SP SYSLOG-MSG`` (RFC 6587 section 3.4.1; RFC 5425 section 4.3)."""
    return str(len(message)).encode("ascii") + b" " + message


class SyslogSink:
    """``Sink`` sending RFC 5424 messages to ``host``:``port`` over TCP, or TLS when ``tls`` (module
    docstring). ``connections`` counts the connections opened."""

    def __init__(
        self, host: str, port: int, *, tls: bool, ca_file: Path | None = None, facility: int = 13,
        app_name: str = "bastion", sd_id: str = "bastion@32473", settle_s: float = 0.05,
    ) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self._ssl = _client_context(ca_file) if tls else None
        self._settle_s = settle_s
        self._format = functools.partial(format_message, facility=facility, app_name=app_name, sd_id=sd_id,
                                         hostname=socket.gethostname(), procid=str(os.getpid()))  # fmt: skip
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connections = 0

    async def send(self, records: Sequence[ExportRecord]) -> None:
        """See ``Sink.send``: raises ``SinkUnavailable`` when the receiver cannot be reached or the
        connection was found closed after the batch (the batch is then sent again)."""
        data = b"".join(frame(self._format(r)) for r in records)
        writer = await self._connection()
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT_S)
            await asyncio.sleep(self._settle_s)  # a receiver that was closing answers with FIN or RST
        except (OSError, TimeoutError) as exc:
            await self._drop()
            raise SinkUnavailable(f"syslog {self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        if not self._alive():
            await self._drop()
            raise SinkUnavailable(f"syslog {self.host}:{self.port}: the receiver closed the connection")

    async def _connection(self) -> asyncio.StreamWriter:
        """The open connection, or a new one when there is none or the receiver closed it."""
        await asyncio.sleep(0)  # let the loop read a FIN or RST that arrived meanwhile
        if self._writer is not None and not self._alive():
            await self._drop()
        if self._writer is not None:
            return self._writer
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self._ssl,
                                        server_hostname=self.host if self._ssl else None),
                _CONNECT_TIMEOUT_S,
            )  # fmt: skip
        except (OSError, TimeoutError) as exc:
            raise SinkUnavailable(f"syslog {self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        self._reader, self._writer = reader, writer
        self.connections += 1
        return writer

    def _alive(self) -> bool:
        """Whether the connection is still open at both ends (no end of stream, no reset read)."""
        reader, writer = self._reader, self._writer
        if reader is None or writer is None or writer.is_closing():
            return False
        return not reader.at_eof() and reader.exception() is None

    async def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def aclose(self) -> None:
        """Close the connection."""
        await self._drop()


def _client_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context

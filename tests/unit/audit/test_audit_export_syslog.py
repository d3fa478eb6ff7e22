"""The syslog sink (``bastion.audit.export_syslog``): an RFC 5424 message checked field by field against a
golden one, octet-counting framing, and a receiver that goes away and comes back (a real TCP listener)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from bastion.audit.export import ExportRecord, SinkUnavailable
from bastion.audit.export_syslog import SyslogSink, format_message, frame

HASH = "9f" * 32
DENY = json.dumps({"version": 1, "kind": "decision", "seq": 7, "time": "2026-05-09T07:35:25.123456Z",
                   "decision": {"effect": "deny"}, "target": "wipe]\"\\", "note": "café", "hash": HASH},
                  ensure_ascii=False)  # fmt: skip
GOLDEN = (b'<108>1 2026-05-09T07:35:25.123456Z gw-1.example bastion 4242 decision [bastion@32473 seq="7" hash="'
          + HASH.encode() + b'"] \xef\xbb\xbf' + DENY.encode("utf-8"))  # fmt: skip
SYSLOG_MSG = re.compile(  # RFC 5424 section 6, the parts used here
    rb"^<(?P<pri>\d{1,3})>(?P<version>1) (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>\[(?:[^\]\\]|\\.)*\]|-) (?P<msg>.*)$",
    re.DOTALL,
)


def _format(record: ExportRecord, **overrides: object) -> bytes:
    options: dict[str, object] = {"facility": 13, "app_name": "bastion", "sd_id": "bastion@32473",
                                  "hostname": "gw-1.example", "procid": "4242", **overrides}  # fmt: skip
    return format_message(record, **options)  # type: ignore[arg-type]


def test_the_golden_message_field_by_field() -> None:
    message = _format(ExportRecord(7, HASH, DENY))
    assert message == GOLDEN
    fields = SYSLOG_MSG.match(message)
    assert fields is not None
    assert int(fields["pri"]) == 13 * 8 + 4  # facility log audit, severity warning (a deny)
    assert fields["version"] == b"1"
    assert fields["timestamp"] == b"2026-05-09T07:35:25.123456Z"  # the record's time, RFC 3339 UTC
    assert (fields["hostname"], fields["app"], fields["procid"]) == (b"gw-1.example", b"bastion", b"4242")
    assert fields["msgid"] == b"decision"
    assert fields["sd"] == b'[bastion@32473 seq="7" hash="' + HASH.encode() + b'"]'
    assert fields["msg"].startswith(b"\xef\xbb\xbf")  # UTF-8 MSG starts with the BOM (6.4)
    assert json.loads(fields["msg"][3:].decode("utf-8")) == json.loads(DENY)


def test_allow_and_outcome_records_are_informational_and_fields_fall_back_to_nil() -> None:
    outcome = json.dumps({"kind": "outcome", "seq": 8, "time": "not a time"})
    message = _format(ExportRecord(8, HASH, outcome), facility=16, hostname="has space", procid="")
    fields = SYSLOG_MSG.match(message)
    assert fields is not None
    assert int(fields["pri"]) == 16 * 8 + 6  # local0, informational
    assert (fields["timestamp"], fields["hostname"], fields["procid"]) == (b"-", b"-", b"-")
    assert fields["msgid"] == b"outcome"


def test_octet_counting_frames_the_length_in_bytes_not_characters() -> None:
    message = _format(ExportRecord(7, HASH, DENY))
    framed = frame(message)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(message) == len(rest)
    assert len(message) > len(message.decode("utf-8"))  # multi-byte characters are counted as bytes


async def test_a_receiver_that_goes_away_gets_the_batch_again_once_back() -> None:
    received: list[bytes] = []
    connections: list[asyncio.StreamWriter] = []

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while True:
            length = await reader.readuntil(b" ") if not reader.at_eof() else b""
            if not length:
                return
            received.append(await reader.readexactly(int(length)))

    server = await asyncio.start_server(receive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = SyslogSink("127.0.0.1", port, tls=False, settle_s=0.02)
    records = [ExportRecord(n, HASH, json.dumps({"kind": "decision", "seq": n})) for n in (1, 2, 3)]
    await sink.send(records[:2])
    for _ in range(100):
        if len(received) == 2:
            break
        await asyncio.sleep(0.01)
    server.close()  # the receiver stops: its listener and its connection
    for writer in connections:
        writer.close()
    await server.wait_closed()
    with pytest.raises(SinkUnavailable):
        await sink.send(records[2:])  # the closed connection is noticed; nobody listens
    server = await asyncio.start_server(receive, "127.0.0.1", port)  # back on the same port
    await sink.send(records[2:])
    for _ in range(100):
        if len(received) == 3:
            break
        await asyncio.sleep(0.01)
    await sink.aclose()
    server.close()
    for writer in connections:
        writer.close()
    await server.wait_closed()
    assert [int(re.search(rb'seq="(\d+)"', m)[1]) for m in received] == [1, 2, 3]  # type: ignore[index]
    assert sink.connections == 2

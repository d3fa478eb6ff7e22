"""The event-stream decoder (HTML Living Standard 9.2.6) on the shapes upstreams send."""

from __future__ import annotations

import pytest

from bastion.errors import UpstreamError
from bastion.upstream.sse import ServerSentEvent, SseDecoder


def decode_all(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SseDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events + decoder.close()


def test_one_event_with_id_and_type() -> None:
    assert decode_all(b'event: message\nid: 7\ndata: {"a":1}\n\n') == [
        ServerSentEvent(event="message", data='{"a":1}', id="7")
    ]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(ending: bytes) -> None:
    stream = ending.join([b"data: one", b"data: two", b"", b"data: three", b"", b""])
    assert [e.data for e in decode_all(stream)] == ["one\ntwo", "three"]


def test_split_anywhere_including_inside_crlf() -> None:
    stream = b"id: 1\r\ndata: hello\r\n\r\ndata: world\r\n\r\n"
    for cut in range(1, len(stream)):
        assert [e.data for e in decode_all(stream[:cut], stream[cut:])] == ["hello", "world"], cut


def test_comments_and_unknown_fields_are_ignored_and_priming_event_kept() -> None:
    events = decode_all(b": keepalive\n\nfoo: bar\nid: p1\nretry: 500\ndata:\n\n")
    assert events == [ServerSentEvent(data="", id="p1", retry=500)]


def test_last_event_id_persists_and_bom_is_dropped() -> None:
    events = decode_all(b"\xef\xbb\xbfid: 3\ndata: a\n\ndata: b\n\n")
    assert [(e.id, e.data) for e in events] == [("3", "a"), ("3", "b")]


def test_unterminated_event_is_not_dispatched() -> None:
    assert decode_all(b"data: partial") == []


def test_oversize_event_is_refused() -> None:
    decoder = SseDecoder(max_event_bytes=64)
    with pytest.raises(UpstreamError):
        decoder.feed(b"data: " + b"x" * 100 + b"\n")
    with pytest.raises(UpstreamError):
        SseDecoder(max_event_bytes=64).feed(b"data: " + b"y" * 100)

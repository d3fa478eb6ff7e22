"""Tests of ``bastion.transport.wire``: reading ASGI requests and writing replies (SSE framing included)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from transport_asgi import Sink

from bastion.errors import BodyTimeout, BodyTooLarge
from bastion.pipeline.context import EmptyReply, JsonReply, SseEvent, SseReply
from bastion.transport.wire import BODY_DEADLINE, read_request, send_reply, sse_bytes

# --- sse_bytes --------------------------------------------------------------------------------


def test_an_event_without_message_or_data_is_a_keepalive_comment() -> None:
    assert sse_bytes(SseEvent()) == b": keepalive\n\n"


def test_a_message_is_one_compact_data_line() -> None:
    event = SseEvent(message={"jsonrpc": "2.0", "id": 1, "result": {}})
    assert sse_bytes(event) == b'data: {"jsonrpc":"2.0","id":1,"result":{}}\n\n'


def test_a_message_with_newlines_in_strings_stays_on_one_line() -> None:
    event = SseEvent(message={"text": "a\nb"})
    assert sse_bytes(event) == b'data: {"text":"a\\nb"}\n\n'


def test_non_ascii_is_sent_as_ascii_escapes_that_decode_back() -> None:
    encoded = sse_bytes(SseEvent(message={"t": "天気", "lone": "\ud800"}))
    assert encoded == b'data: {"t":"\\u5929\\u6c17","lone":"\\ud800"}\n\n'
    assert json.loads(encoded.decode("ascii")[len("data: ") :]) == {"t": "天気", "lone": "\ud800"}


def test_multi_line_data_becomes_one_data_field_per_line() -> None:
    assert sse_bytes(SseEvent(data="line one\nline two\n")) == b"data: line one\ndata: line two\ndata: \n\n"


def test_event_id_and_retry_fields_precede_the_data() -> None:
    event = SseEvent(message={"a": 1}, id="42", event="message-x", retry=1500)
    assert sse_bytes(event) == b'event: message-x\nid: 42\nretry: 1500\ndata: {"a":1}\n\n'


def test_empty_event_name_and_id_are_left_out_and_retry_zero_kept() -> None:
    assert sse_bytes(SseEvent(data="x", id="", event="", retry=0)) == b"retry: 0\ndata: x\n\n"


def test_an_event_with_only_an_id_and_empty_data_still_has_a_data_line() -> None:
    assert sse_bytes(SseEvent(data="", id="7")) == b"id: 7\ndata: \n\n"


def test_a_message_takes_precedence_over_data() -> None:
    assert sse_bytes(SseEvent(message=[1], data="ignored")) == b"data: [1]\n\n"


# --- read_request -----------------------------------------------------------------------------


def _scope(method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": "/mcp/r",
        "headers": headers or [],
        "client": ("10.0.0.7", 5555),
    }


def _receiver(*chunks: bytes, disconnect: bool = False) -> Any:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages = [{**m, "more_body": True} for m in messages] + [{"type": "http.disconnect"}]
    calls = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(calls)

    return receive


async def test_read_request_joins_chunks_and_lowercases_headers() -> None:
    scope = _scope(headers=[(b"Content-Type", b"application/json"), (b"MCP-Method", b"a"), (b"mcp-method", b"b")])
    request = await read_request(scope, _receiver(b'{"a":', b"1}"), 1024)
    assert request.body == b'{"a":1}'
    assert request.headers["content-type"] == "application/json"
    assert request.headers["mcp-method"] == "b"
    assert request.raw_headers == (("content-type", "application/json"), ("mcp-method", "a"), ("mcp-method", "b"))
    assert request.client_ip == "10.0.0.7"
    assert (request.method, request.path) == ("POST", "/mcp/r")


async def test_read_request_stops_at_a_disconnect() -> None:
    request = await read_request(_scope(), _receiver(b"abc", disconnect=True), 1024)
    assert request.body == b"abc"


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    with pytest.raises(BodyTooLarge) as caught:
        await read_request(_scope(headers=[(b"content-length", b"2048")]), receive, 1024)
    assert caught.value.status == 413


async def test_a_streamed_body_over_the_limit_is_refused() -> None:
    with pytest.raises(BodyTooLarge):
        await read_request(_scope(), _receiver(b"x" * 600, b"x" * 600), 1024)


@pytest.mark.parametrize("declared", [b"abc", b"-5", b"", b"1e9"])
async def test_a_non_numeric_content_length_falls_back_to_counting(declared: bytes) -> None:
    request = await read_request(_scope(headers=[(b"content-length", declared)]), _receiver(b"{}"), 1024)
    assert request.body == b"{}"


async def test_get_does_not_read_a_body() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("GET has no body to read")

    request = await read_request(_scope("GET"), receive, 1024)
    assert request.body == b""


async def test_a_request_without_client_has_no_ip() -> None:
    scope = {**_scope(), "client": None}
    assert (await read_request(scope, _receiver(b""), 10)).client_ip is None


def _with_deadline(seconds_left: float, timeout_s: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + seconds_left
    return {**_scope(), "extensions": {BODY_DEADLINE: {"deadline": deadline, "timeout_s": timeout_s}}}


async def test_a_body_not_in_by_the_scope_deadline_is_a_408() -> None:
    chunks = iter([{"type": "http.request", "body": b'{"js', "more_body": True}])

    async def receive() -> dict[str, Any]:
        return next(chunks, None) or await asyncio.sleep(60, {"type": "http.disconnect"})

    with pytest.raises(BodyTimeout) as caught:
        await read_request(_with_deadline(0.05), receive, 1024)
    assert (caught.value.status, caught.value.jsonrpc_code, caught.value.code) == (408, -32600, "body_timeout")
    assert caught.value.message == "Request Timeout: the body did not arrive within 30 s"


async def test_a_body_in_before_the_scope_deadline_is_read() -> None:
    request = await read_request(_with_deadline(10), _receiver(b'{"a":', b"1}"), 1024)
    assert request.body == b'{"a":1}'


# --- send_reply -------------------------------------------------------------------------------


async def test_a_json_reply_has_content_type_and_length() -> None:
    sink = Sink()
    sent = await send_reply(sink, JsonReply(400, {"jsonrpc": "2.0", "id": None, "error": {"code": 1}}, {"x-a": "b"}))
    assert sink.status == 400
    assert sink.headers["content-type"] == "application/json"
    assert sink.headers["x-a"] == "b"
    assert json.loads(sink.body) == {"jsonrpc": "2.0", "id": None, "error": {"code": 1}}
    assert int(sink.headers["content-length"]) == len(sink.body) == sent


async def test_a_json_reply_with_raw_bytes_sends_them_verbatim() -> None:
    sink = Sink()
    await send_reply(sink, JsonReply(200, {"ignored": True}, raw=b'{"raw" : 1}'))
    assert sink.body == b'{"raw" : 1}'


async def test_an_empty_json_reply_has_no_content_type() -> None:
    sink = Sink()
    assert await send_reply(sink, JsonReply(202)) == 0
    assert "content-type" not in sink.headers
    assert sink.headers["content-length"] == "0"


async def test_an_empty_reply() -> None:
    sink = Sink()
    await send_reply(sink, EmptyReply(405, {"allow": "GET, POST, DELETE"}))
    assert (sink.status, sink.headers["allow"], sink.body) == (405, "GET, POST, DELETE", b"")


async def test_an_sse_reply_streams_each_event_and_closes_the_source() -> None:
    closed: list[bool] = []

    async def events() -> AsyncIterator[SseEvent]:
        try:
            yield SseEvent(message={"id": 1}, id="e1")
            yield SseEvent()
            yield SseEvent(data="a\nb")
        finally:
            closed.append(True)

    sink = Sink()
    sent = await send_reply(sink, SseReply(200, events(), {"mcp-session-id": "s"}))
    assert sink.headers["content-type"] == "text/event-stream"
    assert sink.headers["cache-control"] == "no-cache"
    assert sink.headers["mcp-session-id"] == "s"
    assert sink.body == b'id: e1\ndata: {"id":1}\n\n: keepalive\n\ndata: a\ndata: b\n\n'
    assert sent == len(sink.body)
    assert sink.messages[-1] == {"type": "http.response.body", "body": b""}
    assert closed == [True]

"""Decoding ``text/event-stream`` bodies (HTML Living Standard, section 9.2.6 "Interpreting an event stream").

``SseDecoder.feed(chunk)`` takes bytes as they arrive and returns the events
completed by them; ``close()`` returns what a final CR completes (an
unterminated last event is discarded, as the standard says). Lines end with CRLF, LF or CR. An event
whose data grows past ``max_event_bytes`` raises ``UpstreamError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bastion.errors import UpstreamError

__all__ = ["ServerSentEvent", "SseDecoder"]

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: ``event`` type (default ``"message"``), ``data``, last event ``id``, ``retry`` ms."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class SseDecoder:
    """Incremental event-stream decoder for one response."""

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._max = max_event_bytes
        self._buffer = b""
        self._data: list[str] = []
        self._size = 0
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None
        self._first = True

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode ``chunk``; return the events it completes, in order."""
        if self._first and chunk:
            self._first = False
            if chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
        self._buffer += chunk
        events: list[ServerSentEvent] = []
        start = 0
        buffer = self._buffer
        for match in _LINE_END.finditer(buffer):
            if match.group() == b"\r" and match.end() == len(buffer):
                break  # a CR at the end of the chunk may be the first half of CRLF
            event = self._line(buffer[start : match.start()].decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = match.end()
        self._buffer = buffer[start:]
        if len(self._buffer) + self._size > self._max:
            raise UpstreamError(f"upstream event exceeds {self._max} bytes")
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: a CR held back at the end of the last chunk ends its line."""
        if self._buffer.endswith(b"\r"):
            return self.feed(b"\n")
        return []

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(value) + 1
            if self._size > self._max:
                raise UpstreamError(f"upstream event exceeds {self._max} bytes")
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(
            event=self._event or "message", data="\n".join(self._data), id=self._last_id, retry=self._retry
        )
        self._data = []
        self._size = 0
        self._event = ""
        return event

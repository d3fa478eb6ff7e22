"""The JSON-lines file sink: each exported record as one line (its stored JSON), rotated by size.

``send`` appends a batch to ``path`` and fsyncs it before returning, so the cursor moves only past
lines that are on disk. Rotation is the ``logrotate`` scheme done in process: before a line that
would take the file past ``max_bytes``, ``path.(keep-1)`` becomes ``path.keep`` (the oldest beyond
``keep`` is deleted), ..., ``path`` becomes ``path.1``, and a new ``path`` is started; with ``keep``
0 the full file is deleted instead. A record is never split across files. Files are created mode
0600 (records name principals and carry redacted arguments).

Resending after a crash (the lines were written, the cursor not yet moved) would duplicate lines;
the sink avoids that itself: at start it cuts a line torn by a crash mid-write, reads the ``seq`` of
the last line of ``path`` (or of ``path.1`` when ``path`` is empty) and skips records up to it. So
the file holds every record once, in ``seq`` order, across restarts, crashes and rotations (rotate
with ``max_bytes``, not an outside ``logrotate``: the sink keeps its file open).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path

from bastion.audit.export import ExportRecord

__all__ = ["FileSink"]

_TAIL_BYTES = 1024 * 1024
"""How much of a file's end is read to find its last record at start (a record is far smaller)."""


class FileSink:
    """``Sink`` appending JSON lines to ``path``, rotated past ``max_bytes`` keeping ``keep`` old files."""

    def __init__(self, path: Path, *, max_bytes: int, keep: int) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._keep = keep
        self._fd: int | None = None
        self._size = 0
        self._last_seq: int | None = None  # the newest seq in the files: read once, at the first send
        self.rotations = 0

    async def send(self, records: Sequence[ExportRecord]) -> None:
        """See ``Sink.send``: appended and fsynced (``OSError`` when the disk refuses)."""
        await asyncio.to_thread(self._write, records)

    def _write(self, records: Sequence[ExportRecord]) -> None:
        if self._last_seq is None:
            _cut_torn_line(self.path)
            self._last_seq = _last_seq(self.path) or _last_seq(self.path.with_name(self.path.name + ".1"))
        pending = bytearray()
        for record in records:
            if record.seq <= self._last_seq:
                continue  # written before a crash that kept the cursor from moving
            line = record.text.encode("utf-8") + b"\n"
            fd = self._open()
            if self._size + len(pending) + len(line) > self._max_bytes and self._size + len(pending) > 0:
                self._flush(fd, pending)
                pending.clear()
                self._rotate()
            pending += line
            self._last_seq = record.seq
        if pending:
            self._flush(self._open(), pending)

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _flush(self, fd: int, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        self._size += len(data)

    def _rotate(self) -> None:
        """``path`` -> ``path.1`` -> ... -> ``path.keep`` (the oldest dropped); a fresh ``path``."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        name = self.path.name
        if self._keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            self.path.with_name(f"{name}.{self._keep}").unlink(missing_ok=True)
            for n in range(self._keep - 1, 0, -1):
                older = self.path.with_name(f"{name}.{n}")
                if older.exists():
                    older.rename(self.path.with_name(f"{name}.{n + 1}"))
            self.path.rename(self.path.with_name(f"{name}.1"))
        _fsync_dir(self.path.parent)
        self.rotations += 1

    async def aclose(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _cut_torn_line(path: Path) -> None:
    """Truncate ``path`` after its last newline: a line torn by a crash mid-write goes (its record
    was not accepted, so it is sent again, whole)."""
    try:
        with path.open("r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BYTES)
            handle.seek(start)
            tail = handle.read()
            if tail.endswith(b"\n") or not tail:
                return
            handle.truncate(start + tail.rfind(b"\n") + 1)  # rfind -1: the file was one torn line
            handle.flush()
            os.fsync(handle.fileno())
    except FileNotFoundError:
        return


def _last_seq(path: Path) -> int:
    """The ``seq`` of the last line of ``path`` (0: no file, empty, or no record there)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except FileNotFoundError:
        return 0
    for line in reversed(tail.split(b"\n")):
        if not line.strip():
            continue
        try:
            seq = json.loads(line).get("seq")
        except (ValueError, AttributeError):
            continue  # not a record
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

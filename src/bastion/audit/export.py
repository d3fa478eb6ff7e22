"""Audit export: committed records follow the log to other destinations, each at least once.

An ``Exporter`` follows the committed log by ``seq`` for one destination (a ``Sink``)::

    loop:   async with source.claim() as claim:            # the destination's cursor (None: not ours now)
                records = await claim.after(batch)          # committed, seq > cursor, ascending
                await sink.send(records)                    # returns only once the sink has them
                await claim.advance(records[-1])            # then, and only then, the cursor moves (durably)

The cursor moves after the sink accepted the batch, so a crash, a restart or a destination that is
down makes the exporter send again from the cursor: nothing committed is lost, and a record may
arrive twice (at least once). Every exported record carries its ``seq`` and ``hash``, so a receiver
de-duplicates by ``seq`` (the ``hash`` tells a record from another log's). Records are read from the
log itself, not handed over by the request path, so export never slows or fails a call: a
destination that is down only holds its own cursor back, and the exporter retries with backoff.

- ``ExportSource``: the log and the destination's cursor. ``bastion.audit.export_feed``
  ``LocalSource`` (the embedded log; the cursor a file in the data directory) and
  ``bastion.audit.export_postgres`` ``PostgresSource`` (the shared log; the cursor a row locked
  for the turn, so one replica at a time exports to a destination).
- ``Sink``: one destination (``export_file``, ``export_syslog``, ``export_otlp``; ``MemorySink``
  for tests). ``send`` raises ``SinkUnavailable`` (or any error) when the batch was not accepted.

``SinkUnavailable`` never leaves the exporter (it is logged and retried), so it is not part of
``bastion.errors``, whose errors answer clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import orjson

__all__ = [
    "AuditFeed", "Claim", "ExportRecord", "ExportSource", "Exporter", "MemorySink", "Sink", "SinkUnavailable", "finish",
]

logger = logging.getLogger(__name__)


class SinkUnavailable(Exception):
    """A destination did not accept a batch (unreachable, refused, timed out); retried later."""


@dataclass(frozen=True)  # no slots: ``record`` is cached in the instance dict
class ExportRecord:
    """One committed record: its ``seq``, ``hash`` and stored JSON ``text`` (which holds both too)."""

    seq: int
    hash: str
    text: str

    @cached_property
    def record(self) -> dict[str, Any]:
        """The record parsed (for the sinks that map its fields); ``{}`` for text that is not a JSON
        object, so one odd record never stops the export (its text still goes out as stored)."""
        try:
            value = orjson.loads(self.text)
        except orjson.JSONDecodeError:  # orjson refuses an escaped lone surrogate; the json module not
            try:
                value = json.loads(self.text)
            except ValueError:
                return {}
        return value if isinstance(value, dict) else {}


class AuditFeed(Protocol):
    """Committed records of the audit log, read after a ``seq`` (``bastion.audit.export_feed``)."""

    async def after(self, seq: int, limit: int) -> list[ExportRecord]:
        """At most ``limit`` committed records with ``seq`` greater than ``seq``, ascending."""
        ...

    async def aclose(self) -> None:
        """Release what the feed holds."""
        ...


class Sink(Protocol):
    """One destination of exported records."""

    async def send(self, records: Sequence[ExportRecord]) -> None:
        """Deliver ``records`` (ascending ``seq``, at least one); return only once the destination
        has them. Raise (``SinkUnavailable``, ``OSError``, ...) when it may not: they are sent again."""
        ...

    async def aclose(self) -> None:
        """Close connections and files."""
        ...


@dataclass(slots=True)
class MemorySink:
    """A ``Sink`` in memory for tests: keeps what it was sent; ``down`` makes ``send`` fail."""

    records: list[ExportRecord] = field(default_factory=list)
    down: bool = False
    batches: int = 0

    async def send(self, records: Sequence[ExportRecord]) -> None:
        """See ``Sink.send``."""
        if self.down:
            raise SinkUnavailable("the memory sink is down")
        self.records.extend(records)
        self.batches += 1

    async def aclose(self) -> None:
        """See ``Sink.aclose``."""


class Claim(Protocol):
    """One turn at a destination's cursor (``ExportSource.claim``): ``seq`` is where it stands."""

    seq: int

    async def after(self, limit: int) -> list[ExportRecord]:
        """At most ``limit`` committed records after ``seq``, ascending."""
        ...

    async def advance(self, last: ExportRecord) -> None:
        """Move the cursor to ``last`` durably (the sink accepted everything up to it)."""
        ...


class ExportSource(Protocol):
    """The log and one destination's cursor: ``LocalSource`` (embedded log, cursor file) or
    ``PostgresSource`` (shared log, cursor row: one replica at a time)."""

    def claim(self) -> AbstractAsyncContextManager[Claim | None]:
        """A turn at the cursor, or None while another process holds it (a replica exporting)."""
        ...

    async def aclose(self) -> None:
        """Release what the source holds."""
        ...


class Exporter:
    """Follows the log for one sink (module docstring). ``run`` polls every ``poll_s`` seconds and,
    after a failure, waits ``backoff_s`` doubling up to ``max_backoff_s``. ``position`` is the cursor
    as last seen; ``exported`` counts the records accepted since start; ``failures`` the failed
    attempts."""

    def __init__(
        self, name: str, source: ExportSource, sink: Sink, *, batch: int = 500,
        poll_s: float = 0.5, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
    ) -> None:  # fmt: skip
        self.name = name
        self.source = source
        self.sink = sink
        self._batch = batch
        self._poll_s = poll_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self.position = 0
        self.exported = 0
        self.failures = 0

    async def export_pending(self) -> int:
        """Send every record committed after the cursor, batch by batch, moving the cursor after each;
        returns how many were sent (0 too while another replica holds the cursor). Raises what the
        source or the sink raised (the cursor stays at the last batch accepted)."""
        sent = 0
        while True:
            async with self.source.claim() as claim:
                if claim is None:
                    return sent
                self.position = claim.seq
                records = await claim.after(self._batch)
                if not records:
                    return sent
                if records[0].seq != claim.seq + 1:  # the log lost records (verify says which)
                    logger.warning("audit export %s: records %d to %d are missing from the log; exporting from %d",
                                   self.name, claim.seq + 1, records[0].seq - 1, records[0].seq)  # fmt: skip
                await self.sink.send(records)
                await claim.advance(records[-1])
                self.position = records[-1].seq
            sent += len(records)
            self.exported += len(records)

    async def run(self) -> None:
        """Export until cancelled; never raises (except ``CancelledError``): a failure is logged and
        retried after a backoff, the cursor held where the sink last accepted."""
        delay = self._backoff_s
        failing = False
        while True:
            try:
                await self.export_pending()
            except Exception as exc:  # noqa: BLE001 - any failure: send again later, from the cursor
                self.failures += 1
                if not failing:
                    logger.warning("audit export %s: %s; retrying from seq %d", self.name, exc, self.position + 1)
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)
                continue
            if failing:
                logger.warning("audit export %s: delivering again (up to seq %d)", self.name, self.position)
            failing, delay = False, self._backoff_s
            await asyncio.sleep(self._poll_s)

    async def aclose(self) -> None:
        """Close the sink and the source."""
        try:
            await self.sink.aclose()
        finally:
            await self.source.aclose()


async def finish(exporters: Sequence[Exporter], timeout_s: float) -> None:
    """At shutdown, after the log's last commit: send what is still pending, each exporter for at most
    ``timeout_s`` seconds, then close them. Never raises (except ``CancelledError``): what is not
    sent now is sent at the next start, from the cursor."""

    async def one(exporter: Exporter) -> None:
        try:
            await asyncio.wait_for(exporter.export_pending(), timeout_s)
        except Exception as exc:  # noqa: BLE001 - the cursor says where the next run starts
            logger.warning("audit export %s: stopped at seq %d: %s", exporter.name, exporter.position,
                           exc or type(exc).__name__)  # fmt: skip
        try:
            await exporter.aclose()
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            logger.info("audit export %s: closing: %s", exporter.name, exc)

    await asyncio.gather(*(one(e) for e in exporters))

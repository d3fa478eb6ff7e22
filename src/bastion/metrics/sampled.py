"""Gauges read from where the count lives, when ``/metrics`` is scraped: the approval requests
pending in the approval store, the sessions in the session store.

Such counts cost nothing on the request path: nobody keeps them up to date, each is one cheap
query at a scrape (an indexed ``count(*)``; ``ZCARD`` on Redis). Every read is bounded by
``timeout_s``; one that fails or times out sets its gauge to NaN (unknown, not a stale value) and
is logged, and never fails the scrape. Under ``bastion serve --workers N`` the gauges use the
``livemostrecent`` multiprocess mode: the worker that answered the last scrape read the shared
store, and its value is the one shown.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge

__all__ = ["ScrapedGauges"]

logger = logging.getLogger(__name__)


class ScrapedGauges:
    """Gauges set from their ``read`` at each ``sample`` (the ``/metrics`` handler, before it
    serializes); each read is bounded by ``timeout_s`` seconds."""

    def __init__(self, timeout_s: float = 1.0) -> None:
        self._timeout_s = timeout_s
        self._reads: list[tuple[str, Gauge, Callable[[], Awaitable[int]]]] = []

    def watch(self, gauge: Gauge, read: Callable[[], Awaitable[int]]) -> None:
        """Set ``gauge`` to what ``read()`` returns at every scrape."""
        self._reads.append((next(iter(gauge.describe())).name, gauge, read))

    async def sample(self) -> None:
        """Read every watched count, concurrently; never raises (a failed read sets NaN)."""
        if not self._reads:
            return
        values = await asyncio.gather(*(asyncio.wait_for(read(), self._timeout_s) for _, _, read in self._reads),
                                      return_exceptions=True)  # fmt: skip
        for (name, gauge, _), value in zip(self._reads, values, strict=True):
            if isinstance(value, BaseException):
                if isinstance(value, asyncio.CancelledError):
                    raise value
                logger.warning("reading %s for /metrics failed: %s", name, value or type(value).__name__)
                gauge.set(math.nan)
            else:
                gauge.set(value)

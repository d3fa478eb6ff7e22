"""Timers of the in-process rows: the median time per call of a function or an awaitable."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable


def per_call_us(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    """Median over ``repeats`` batches of the time per call of ``fn`` in microseconds."""
    fn()
    batches = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        batches.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(batches)


async def per_await_us(make: Callable[[], Awaitable[object]], n: int, repeats: int = 5) -> float:
    """:func:`per_call_us` for coroutines, on the running event loop: median over ``repeats`` batches
    of the time per ``await make()`` in microseconds (``make`` creates the awaitable, as a caller does)."""
    await make()
    batches = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(n):
            await make()
        batches.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(batches)

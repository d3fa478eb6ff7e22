"""What the contract suites share: a fixture that opens stores on one backend, as replicas would, and
the PostgreSQL the shared backends run against (each test in a schema of its own, dropped after)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.support.databases import (  # noqa: F401 - re-exported for the contract suites
    POSTGRES_URL,
    REDIS_URL,
    delete_redis_keys,
    drop_postgres_schema,
    postgres_schema,
)

S = TypeVar("S", bound=AbstractAsyncContextManager[Any])
T = TypeVar("T")

CLEANUPS: dict[str, Callable[[Path], Awaitable[None]]] = {"postgres": drop_postgres_schema}
"""What a backend leaves behind a test, to remove once its stores are closed."""


async def eventually(check: Callable[[], bool], within_s: float = 1.0) -> bool:
    """Whether ``check()`` became true within ``within_s`` seconds (polled every 10 ms): a shared
    backend tells other replicas of a change asynchronously."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def handles_fixture(backends: dict[str, Callable[[Path], S]]) -> Any:
    """A fixture, parametrised by the names in ``backends`` (each a factory of a store on the
    backend at ``tmp_path``), whose value opens started stores on one fresh backend: call it
    (``await handles()``) once per replica. Every store it opened is closed after the test, then
    what the backend left behind is removed (``CLEANUPS``)."""

    @pytest.fixture(params=sorted(backends))
    async def handles(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[S]]]:
        async with AsyncExitStack() as stack:
            cleanup = CLEANUPS.get(request.param)
            if cleanup is not None:
                stack.push_async_callback(cleanup, tmp_path)  # last: after the stores closed

            async def open_store() -> S:
                store: S = await stack.enter_async_context(backends[request.param](tmp_path))
                return store

            yield open_store

    return handles


@asynccontextmanager
async def started(store: T) -> AsyncIterator[T]:
    """``store`` with its ``start`` awaited first and its ``close`` after, when it has them (a memory
    store has neither)."""
    start = getattr(store, "start", None)
    if start is not None:
        await start()
    try:
        yield store
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            await close()

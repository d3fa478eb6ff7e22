"""What the contract suites share: a fixture that opens stores on one backend, as replicas would, and
the PostgreSQL the shared backends run against (each test in a schema of its own, dropped after)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from redis.asyncio import Redis

S = TypeVar("S", bound=AbstractAsyncContextManager[Any])

REDIS_URL = "redis://127.0.0.1:6379/0"
"""The Redis every machine of ours and CI runs on loopback; each test uses a key prefix of its own."""


async def delete_redis_keys(prefix: str) -> None:
    """Delete every key named ``<prefix>...`` from the Redis at ``REDIS_URL``."""
    async with Redis.from_url(REDIS_URL) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)


POSTGRES_URL = os.environ.get("BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The PostgreSQL every machine of ours and CI runs on loopback (trust auth, database ``test``)."""


def postgres_schema(tmp_path: Path) -> str:
    """The schema of the test whose directory is ``tmp_path``: every handle of one test shares it."""
    return "t_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:24]


async def drop_postgres_schema(tmp_path: Path) -> None:
    """Drop the test's schema (``postgres_schema``) and everything in it."""
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{postgres_schema(tmp_path)}" CASCADE')
    finally:
        await connection.close()


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

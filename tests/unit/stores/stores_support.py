"""What the contract suites share: a fixture that opens stores on one backend, as replicas would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest

S = TypeVar("S", bound=AbstractAsyncContextManager[Any])


def handles_fixture(backends: dict[str, Callable[[Path], S]]) -> Any:
    """A fixture, parametrised by the names in ``backends`` (each a factory of a store on the
    backend at ``tmp_path``), whose value opens started stores on one fresh backend: call it
    (``await handles()``) once per replica. Every store it opened is closed after the test."""

    @pytest.fixture(params=sorted(backends))
    async def handles(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[S]]]:
        async with AsyncExitStack() as stack:

            async def open_store() -> S:
                store: S = await stack.enter_async_context(backends[request.param](tmp_path))
                return store

            yield open_store

    return handles

"""Fixtures the store suites share."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from stores_support import delete_redis_keys


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A Redis key prefix of the test's own; its keys are deleted afterwards."""
    name = f"bastion-test:{uuid.uuid4().hex}:"
    yield name
    await delete_redis_keys(name)

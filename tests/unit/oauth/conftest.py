"""Fixtures of the authorization server tests: an open SQLite authorization store in ``tmp_path``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.oauth import SQLiteAuthorizationStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteAuthorizationStore]:
    """A started store on ``tmp_path/bastion.db``, closed after the test."""
    opened = SQLiteAuthorizationStore(tmp_path / "bastion.db")
    await opened.start()
    yield opened
    await opened.close()

"""Fixtures for the audit tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where the test's audit database lives (its directory is created by the log)."""
    return tmp_path / "data" / "bastion.db"

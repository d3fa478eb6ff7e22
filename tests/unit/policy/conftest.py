"""Fixtures for the policy tests: policy files on disk and engines loaded from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from policy_helpers import ENGINE_POLICIES

from bastion.policy import PolicyEngine


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write ``text`` to ``tmp_path/name`` and return the path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write


@pytest.fixture
def engine_for(write: Callable[[str, str], Path]) -> Callable[[str], PolicyEngine]:
    """Load an engine from policy text (built-in schema)."""

    def _load(text: str) -> PolicyEngine:
        return PolicyEngine.load([write("p.cedar", text)])

    return _load


@pytest.fixture
def engine(engine_for: Callable[[str], PolicyEngine]) -> PolicyEngine:
    """The engine of ``ENGINE_POLICIES``."""
    return engine_for(ENGINE_POLICIES)

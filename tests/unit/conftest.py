"""Fixtures the unit tests of several packages share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    """A configuration document to build on: one policy permitting everything, one HTTP route ``notes``
    (nothing listens at its URL)."""
    policy = tmp_path / "policy.cedar"
    policy.write_text('@id("p")\npermit (principal, action, resource);\n', encoding="utf-8")
    return {
        "policy": {"files": [str(policy)]},
        "routes": [{"name": "notes", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True,
                                              "allow": ["127.0.0.1"]}}],
    }  # fmt: skip

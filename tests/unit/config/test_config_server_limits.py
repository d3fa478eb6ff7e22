"""``server.header_timeout_s``, ``body_timeout_s``, ``max_header_bytes`` and ``max_connections``:
documented defaults, durations as elsewhere in the file, and a clear error naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.config import ServerSettings, parse_config
from bastion.errors import ConfigError


def _server(tmp_path: Path, **server: Any) -> ServerSettings:
    (tmp_path / "p.cedar").write_text('@id("p") permit(principal, action, resource);', encoding="utf-8")
    document = {
        "server": server,
        "policy": {"files": ["p.cedar"]},
        "routes": [{"name": "r", "stdio": {"command": "true"}}],
    }
    return parse_config(document, source="bastion.yaml", base_dir=tmp_path).server


def test_the_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    server = _server(tmp_path)
    assert (server.header_timeout_s, server.body_timeout_s) == (10, 30)
    assert (server.max_header_bytes, server.max_connections) == (32768, 512)


def test_timeouts_take_durations_or_seconds(tmp_path: Path) -> None:
    server = _server(tmp_path, header_timeout_s="5s", body_timeout_s="2m")
    assert (server.header_timeout_s, server.body_timeout_s) == (5, 120)
    assert _server(tmp_path, header_timeout_s=3).header_timeout_s == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("header_timeout_s", 0),
        ("header_timeout_s", "6m"),  # above 300 s
        ("header_timeout_s", "1.5s"),
        ("body_timeout_s", 0),
        ("body_timeout_s", "2h"),  # above 3600 s
        ("max_header_bytes", 1024),  # below 4096: a bearer token alone may be larger
        ("max_header_bytes", 2 * 1024 * 1024),
        ("max_connections", 0),
        ("max_connections", -5),
    ],
)
def test_a_value_out_of_range_is_an_error_naming_the_key(tmp_path: Path, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        _server(tmp_path, **{key: value})
    assert f"server.{key}" in caught.value.message

"""``volume:`` and ``result_volume`` (route and tool) in the configuration file: accepted, refused, named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion import ConfigError, parse_config


def _config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    (tmp_path / "p.cedar").write_text('@id("a") permit(principal, action, resource);', encoding="utf-8")
    route = {"name": "db", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True}}
    return {"policy": {"files": ["p.cedar"]}, "routes": [{**route, **extra.pop("route", {})}], **extra}


def test_the_defaults_flag_and_the_settings_are_read(tmp_path: Path) -> None:
    plain = parse_config(_config(tmp_path), base_dir=tmp_path)
    assert plain.routes[0].result_volume == "flag"
    assert (plain.volume.samples, plain.volume.min_samples) == (200, 20)
    config = parse_config(
        _config(
            tmp_path,
            volume={"samples": 50, "min_samples": 5, "factor": 4, "floor_bytes": 1024},
            route={"result_volume": "withhold", "tools": {"export": {"result_volume": "off"}}},
        ),
        base_dir=tmp_path,
    )
    assert (config.volume.samples, config.volume.factor, config.volume.floors) == (50, 4, (1024, 50, 100))
    assert config.routes[0].result_volume == "withhold"
    assert config.routes[0].tools["export"].result_volume == "off"


@pytest.mark.parametrize(
    ("extra", "place"),
    [
        ({"route": {"result_volume": "block"}}, "routes.0.result_volume"),
        ({"route": {"tools": {"export": {"result_volume": "drop"}}}}, "routes.0.tools.export.result_volume"),
        ({"volume": {"percentile": 101}}, "volume.percentile"),
        ({"volume": {"samples": 10, "min_samples": 20}}, "volume.min_samples"),
        ({"volume": {"window": 10}}, "volume.window"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_key(tmp_path: Path, extra: dict[str, Any], place: str) -> None:
    with pytest.raises(ConfigError, match=place.replace(".", r"\.")):
        parse_config(_config(tmp_path, **extra), base_dir=tmp_path)

"""Which tool arguments the URL argument stage checks, and what it makes of their values."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.config.routes import UrlArgumentSettings
from bastion.errors import EgressDenied
from bastion.pipeline.stages.url_arguments import _urls, url_argument_names

TOOL: dict[str, Any] = {
    "name": "fetch",
    "inputSchema": {
        "type": "object",
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "base": {"type": "string", "format": "uri-reference"},
            "note": {"type": "string"},
            "odd": "not a schema",
        },
    },
}


def test_names_are_checked_whatever_the_schema_says() -> None:
    assert url_argument_names(UrlArgumentSettings(names=("note",)), TOOL) == ["note"]
    assert url_argument_names(UrlArgumentSettings(names=("target",)), None) == ["target"]


def test_format_uri_adds_the_schemas_uri_arguments_once() -> None:
    settings = UrlArgumentSettings(names=("url",), format_uri=True)
    assert url_argument_names(settings, TOOL) == ["url", "base"]


@pytest.mark.parametrize(
    "tool", [None, {"name": "x"}, {"name": "x", "inputSchema": []}, {"inputSchema": {"properties": 1}}]
)
def test_a_tool_without_a_usable_schema_has_only_the_named_arguments(tool: Any) -> None:
    assert url_argument_names(UrlArgumentSettings(names=("u",), format_uri=True), tool) == ["u"]


def test_a_list_of_urls_is_each_checked_and_anything_else_refused() -> None:
    assert list(_urls("urls", ["https://a.example/", "https://b.example/"])) == [
        "https://a.example/",
        "https://b.example/",
    ]
    for value in (5, None, {"href": "https://a.example/"}, ["https://a.example/", 3]):
        with pytest.raises(EgressDenied) as refused:
            list(_urls("url", value))
        assert refused.value.data == {"argument": "url"}


def test_a_bad_allow_entry_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.1/8"):
        UrlArgumentSettings(allow=("10.0.0.1/8",))

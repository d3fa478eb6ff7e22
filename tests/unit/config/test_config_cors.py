"""``server.cors``: origins normalized as browsers send them, the wildcard alone and never with
credentials, and every CORS origin admitted by the Origin check (one derivation, ``browser_origins``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.config import parse_config
from bastion.config.cors import normalize_origin
from bastion.errors import ConfigError, ForbiddenOrigin
from bastion.transport.checks import OriginPolicy


def _config(tmp_path: Path, **server: Any) -> Any:
    (tmp_path / "p.cedar").write_text('@id("p") permit(principal, action, resource);', encoding="utf-8")
    document = {
        "server": server,
        "policy": {"files": ["p.cedar"]},
        "routes": [{"name": "r", "stdio": {"command": "true"}}],
    }
    return parse_config(document, source="bastion.yaml", base_dir=tmp_path)


def _error(tmp_path: Path, **cors: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, cors=cors)
    return caught.value.message


def test_no_cross_origin_access_by_default(tmp_path: Path) -> None:
    cors = _config(tmp_path).server.cors
    assert cors.allowed_origins == ()
    assert cors.allow_credentials is False


def test_the_wildcard_with_credentials_is_a_config_error(tmp_path: Path) -> None:
    message = _error(tmp_path, allowed_origins=["*"], allow_credentials=True)
    assert message.startswith("bastion.yaml: server.cors")
    assert "allow_credentials cannot be used with allowed_origins ['*']" in message


def test_the_wildcard_stands_alone(tmp_path: Path) -> None:
    assert "list it alone" in _error(tmp_path, allowed_origins=["*", "https://app.example.com"])


@pytest.mark.parametrize(
    "origin",
    ["null", "app.example.com", "ftp://app.example.com", "https://app.example.com/mcp", "https://app.example.com?x=1",
     "https://user@app.example.com", "https://*.example.com", "https://app.example.com:99999", "https://", "file:///x"],
)  # fmt: skip
def test_what_is_not_an_origin_is_refused_with_its_key(tmp_path: Path, origin: str) -> None:
    message = _error(tmp_path, allowed_origins=[origin])
    assert "server.cors.allowed_origins" in message
    assert "is not an origin" in message


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        ("HTTPS://App.Example.com/", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("http://[::1]:3000", "http://[::1]:3000"),
        ("*", "*"),
    ],
)
def test_origins_are_kept_as_browsers_send_them(written: str, sent: str) -> None:
    assert normalize_origin(written) == sent


def test_credentials_with_listed_origins_are_allowed(tmp_path: Path) -> None:
    cors = _config(
        tmp_path, cors={"allowed_origins": ["https://app.example.com"], "allow_credentials": True}
    ).server.cors
    assert cors.allowed_origins == ("https://app.example.com",)
    assert cors.allow_credentials is True


def test_a_cors_origin_passes_the_origin_check(tmp_path: Path) -> None:
    server = _config(
        tmp_path,
        port=8080,
        allowed_origins=["https://proxy.example.com"],
        cors={"allowed_origins": ["http://localhost:5173"]},
    ).server
    origins = OriginPolicy.for_listener(server.base_url, server.port, (), server.browser_origins)
    for origin in ("http://127.0.0.1:8080", "https://proxy.example.com", "http://localhost:5173"):
        origins.check({"host": "127.0.0.1:8080", "origin": origin})
    with pytest.raises(ForbiddenOrigin, match="Origin is not allowed"):
        origins.check({"host": "127.0.0.1:8080", "origin": "http://localhost:5174"})


def test_the_wildcard_admits_every_origin_but_not_every_host(tmp_path: Path) -> None:
    server = _config(tmp_path, port=8080, cors={"allowed_origins": ["*"]}).server
    origins = OriginPolicy.for_listener(server.base_url, server.port, (), server.browser_origins)
    origins.check({"host": "127.0.0.1:8080", "origin": "https://anything.example"})
    with pytest.raises(ForbiddenOrigin, match="Host header is not allowed"):
        origins.check({"host": "anything.example", "origin": "https://anything.example"})

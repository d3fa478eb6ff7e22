"""Who may read ``/metrics`` (``metrics.allow``, ``metrics.token``) and the ``metrics:`` settings'
validation: table-driven over ``admitted``, then the route itself through Starlette's test client
with the peer address it reports."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bastion.config.metrics import MetricsSettings
from bastion.errors import ConfigError
from bastion.metrics import BastionMetrics, admitted, metrics_route

LOOPBACK = MetricsSettings().networks()
OFFICE = (ipaddress.ip_network("10.20.0.0/16"),)


@pytest.mark.parametrize(
    ("host", "authorization", "networks", "token", "expected"),
    [
        ("127.0.0.1", None, LOOPBACK, None, True),
        ("127.8.9.10", None, LOOPBACK, None, True),
        ("::1", None, LOOPBACK, None, True),
        ("::ffff:127.0.0.1", None, LOOPBACK, None, True),  # IPv4-mapped: judged as 127.0.0.1
        ("192.0.2.7", None, LOOPBACK, None, False),
        ("2001:db8::1", None, LOOPBACK, None, False),
        ("10.20.3.4", None, OFFICE, None, True),
        ("127.0.0.1", None, OFFICE, None, False),  # allow replaces loopback, it does not add to it
        ("testclient", None, LOOPBACK, None, False),  # not an address
        (None, None, LOOPBACK, None, False),
        ("192.0.2.7", "Bearer s3cret", LOOPBACK, b"s3cret", True),
        ("192.0.2.7", "bearer s3cret", LOOPBACK, b"s3cret", True),
        ("192.0.2.7", "Bearer wrong", LOOPBACK, b"s3cret", False),
        ("192.0.2.7", "Basic s3cret", LOOPBACK, b"s3cret", False),
        ("192.0.2.7", "Bearer ", LOOPBACK, b"s3cret", False),
        ("192.0.2.7", "Bearer s3cret", LOOPBACK, None, False),  # no token configured: none accepted
    ],
)
def test_admitted(
    host: str | None, authorization: str | None, networks: tuple[ipaddress.IPv4Network, ...], token: bytes | None,
    expected: bool,
) -> None:  # fmt: skip
    assert admitted(host, authorization, networks, token) is expected


def _client(settings: MetricsSettings, peer: str) -> TestClient:
    metrics = BastionMetrics()
    metrics.audit_failures.inc()
    return TestClient(Starlette(routes=[metrics_route(settings, metrics)]), client=(peer, 40000))


def test_loopback_reads_the_exposition_by_default() -> None:
    response = _client(MetricsSettings(), "127.0.0.1").get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["cache-control"] == "no-store"
    assert "bastion_audit_write_failures_total 1.0" in response.text


def test_another_address_is_refused_without_the_metrics() -> None:
    response = _client(MetricsSettings(), "203.0.113.9").get("/metrics")
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden"}
    assert "bastion_" not in response.text


def test_a_token_admits_any_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_TOKEN", "t0ken")
    settings = MetricsSettings.model_validate(
        {"allow": [], "path": "/internal/metrics", "token": {"env": "METRICS_TOKEN"}}
    )
    client = _client(settings, "203.0.113.9")
    assert client.get("/internal/metrics", headers={"authorization": "Bearer t0ken"}).status_code == 200
    assert client.get("/internal/metrics", headers={"authorization": "Bearer t0ke"}).status_code == 403
    assert client.get("/internal/metrics").status_code == 403
    assert _client(settings, "127.0.0.1").get("/internal/metrics").status_code == 403  # allow: [] admits no address


def test_an_unresolvable_token_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_METRICS_TOKEN", raising=False)
    settings = MetricsSettings.model_validate({"token": {"env": "NO_SUCH_METRICS_TOKEN"}})
    with pytest.raises(ConfigError, match="NO_SUCH_METRICS_TOKEN"):
        metrics_route(settings, BastionMetrics())


def test_an_empty_token_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMPTY_METRICS_TOKEN", "  ")  # else "Authorization: Bearer " would read the metrics
    settings = MetricsSettings.model_validate({"allow": [], "token": {"env": "EMPTY_METRICS_TOKEN"}})
    with pytest.raises(ConfigError, match=r"metrics\.token: the secret it names is empty"):
        metrics_route(settings, BastionMetrics())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"allow": ["10.0.0.1/8"]}, "is not a network"),  # host bits set
        ({"allow": ["10.0.0.0/33"]}, "is not a network"),
        ({"allow": ["example.com"]}, "is not a network"),
        ({"path": "metrics"}, "starts with '/'"),
        ({"path": "/metrics/"}, "does not end with '/'"),
        ({"path": "/.well-known/metrics"}, "may not be under"),
        ({"token": "inline-secret"}, "written inline"),
        ({"port": 9100}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_name_the_problem(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MetricsSettings.model_validate(values)


def test_the_defaults_are_on_at_slash_metrics_for_loopback_only() -> None:
    settings = MetricsSettings()
    assert (settings.enabled, settings.path, settings.allow, settings.token) == (
        True, "/metrics", ("127.0.0.0/8", "::1/128"), None,
    )  # fmt: skip


def test_a_metrics_path_that_is_a_routes_path_is_refused(tmp_path: Path) -> None:
    from bastion import Gateway, parse_config

    (tmp_path / "p.cedar").write_text('@id("a") permit(principal, action, resource);')
    config = parse_config({
        "data_dir": str(tmp_path / "data"), "policy": {"files": ["p.cedar"]}, "metrics": {"path": "/mcp-metrics"},
        "routes": [{"name": "echo", "path": "/mcp-metrics",
                    "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True}}],
    }, base_dir=tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match=r"metrics\.path: /mcp-metrics is the path of route echo"):
        Gateway(config)

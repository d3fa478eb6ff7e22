"""``bastion serve --workers N`` (``bastion.cli.workers``): what a configuration must share before it can
run as several workers, and the listener every worker binds with ``SO_REUSEPORT``."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from bastion.cli.serving import reuse_port_socket
from bastion.cli.workers import check_workers, worker_problems
from bastion.config import parse_config
from bastion.errors import ConfigError

SHARED = {"postgres": {"url": "postgresql://db/gw"}, "redis": {"url": "redis://cache:6379/0"}}


def _config(tmp_path: Path, policy: str = '@id("p") permit (principal, action, resource);', **extra: Any) -> Any:
    (tmp_path / "p.cedar").write_text(policy, encoding="utf-8")
    return parse_config({
        "policy": {"files": [str(tmp_path / "p.cedar")]},
        "routes": [{"name": "r", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True, "allow": ["127.0.0.1"]},
                    **extra.pop("route", {})}],
        **extra,
    })  # fmt: skip


def test_the_embedded_default_runs_one_worker_only(tmp_path: Path) -> None:
    config = _config(tmp_path)
    check_workers(config, 1)  # always fine
    problems = worker_problems(config)
    assert [p.split(" is not set")[0] for p in problems] == ["stores.postgres", "stores.redis"]
    with pytest.raises(ConfigError, match="--workers 2 needs"):
        check_workers(config, 2)
    with pytest.raises(ConfigError, match="at least 1"):
        check_workers(config, 0)


def test_shared_stores_let_several_workers_run(tmp_path: Path) -> None:
    check_workers(_config(tmp_path, stores=SHARED), 4)


@pytest.mark.parametrize(
    ("extra", "policy", "named"),
    [
        ({"limits": [{"name": "l", "rate": "5/minute"}]}, None, "counters.redis_url"),
        ({}, '@id("p") @rate("5/minute") permit (principal, action, resource);', "counters.redis_url"),
    ],
)  # fmt: skip
def test_per_process_state_in_use_is_named(
    tmp_path: Path, extra: dict[str, Any], policy: str | None, named: str
) -> None:
    config = _config(tmp_path, policy or '@id("p") permit (principal, action, resource);', stores=SHARED, **extra)
    problems = worker_problems(config)
    assert len(problems) == 1
    assert problems[0].startswith(named)


def test_session_caps_and_data_flow_labels_are_shared_through_stores_redis(tmp_path: Path) -> None:
    labels = '@id("p") permit (principal, action, resource) unless { context.session_labels.contains("pii") };'
    extra: dict[str, Any] = {
        "session_caps": {"calls": 10},
        "route": {"session_caps": {"distinct_tools": 3}, "tools": {"export": {"labels": ["pii"]}}},
    }
    check_workers(_config(tmp_path, labels, stores=SHARED, **extra), 4)
    without_redis = worker_problems(_config(tmp_path, labels, stores={"postgres": SHARED["postgres"]}, **extra))
    assert len(without_redis) == 1
    assert without_redis[0].startswith("stores.redis is not set (MCP sessions, session caps, data-flow labels")


def test_two_workers_bind_one_port() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        second = reuse_port_socket("127.0.0.1", port)
        try:
            assert second.getsockname() == ("127.0.0.1", port)
            assert second.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        finally:
            second.close()
        plain = socket.socket()
        with pytest.raises(OSError, match="Address already in use"):  # without SO_REUSEPORT the port is taken
            plain.bind(("127.0.0.1", port))
        plain.close()
    finally:
        first.close()

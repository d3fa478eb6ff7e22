"""``bastion.stores.backends``: which backend a configuration gets for the short-lived stores that
``stores.redis`` shares (session activity, continuations), and under which key prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.config import parse_config
from bastion.stores.backends import activity_store, continuation_store
from bastion.stores.memory_activity import MemoryActivityStore
from bastion.stores.memory_continuations import MemoryContinuationStore
from bastion.stores.redis_activity import RedisActivityStore
from bastion.stores.redis_continuations import RedisContinuationStore


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    policy = tmp_path / "policy.cedar"
    policy.write_text('@id("p")\npermit (principal, action, resource);\n', encoding="utf-8")
    return {
        "policy": {"files": [str(policy)]},
        "routes": [{"name": "notes", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True,
                                              "allow": ["127.0.0.1"]}}],
    }  # fmt: skip


def test_without_stores_redis_both_stay_in_this_process(base: dict[str, Any]) -> None:
    config = parse_config(base)
    assert isinstance(activity_store(config), MemoryActivityStore)
    assert isinstance(continuation_store(config), MemoryContinuationStore)


async def test_with_stores_redis_both_are_in_redis_under_their_own_prefix(base: dict[str, Any]) -> None:
    config = parse_config({**base, "stores": {"redis": {"url": "redis://cache:6379/1", "prefix": "gw:"}}})
    activity, continuations = activity_store(config), continuation_store(config)
    assert isinstance(activity, RedisActivityStore)
    assert isinstance(continuations, RedisContinuationStore)
    assert (activity._prefix, continuations._prefix) == ("gw:act:", "gw:cont:")
    await activity.close()
    await continuations.close()

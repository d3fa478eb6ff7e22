"""``bastion.stores.backends``: which backend a configuration gets for the short-lived stores that
``stores.redis`` shares (session activity, continuations), and under which key prefix."""

from __future__ import annotations

from typing import Any

from bastion.config import parse_config
from bastion.stores.backends import activity_store, continuation_store
from bastion.stores.memory_activity import MemoryActivityStore
from bastion.stores.memory_continuations import MemoryContinuationStore
from bastion.stores.redis_activity import RedisActivityStore
from bastion.stores.redis_continuations import RedisContinuationStore


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

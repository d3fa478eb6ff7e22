"""``stores:`` (``bastion.config.stores``): the shared PostgreSQL's settings, where each store keeps its
state, and the refusal of a several-replica deployment that leaves a store embedded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.config import parse_config
from bastion.config.stores import store_backends
from bastion.errors import ConfigError


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="bastion.yaml")
    return caught.value.message


def test_postgres_settings_and_the_password_by_reference(base: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config({**base, "stores": {"postgres": {"url": "postgresql://bastion@db:5432/gw", "schema": "gw_1",
                                                           "password": {"env": "PG_PASSWORD"}}}})  # fmt: skip
    postgres = config.stores.postgres
    assert postgres is not None
    assert (postgres.db_schema, postgres.pool_size) == ("gw_1", 10)
    monkeypatch.setenv("PG_PASSWORD", "p@ss/word")
    assert postgres.resolved_url() == "postgresql://bastion:p%40ss%2Fword@db:5432/gw"
    monkeypatch.delenv("PG_PASSWORD")
    with pytest.raises(ConfigError, match="PG_PASSWORD"):
        postgres.resolved_url()


@pytest.mark.parametrize(
    ("postgres", "expected"),
    [
        ({"url": "mysql://db/gw"}, "stores.postgres: Value error, stores.postgres.url must be postgresql://"),
        ({"url": "postgresql:///gw"}, "stores.postgres.url must be postgresql://user@host:port/database"),
        ({"url": "postgresql://u:secret@db/gw"}, "carries a password: give it as password: {env: NAME}"),
        ({"url": "postgresql://db/gw", "schema": "Public; DROP"}, "stores.postgres.schema"),
        ({"url": "postgresql://db/gw", "password": "inline"}, "stores.postgres.password"),
        ({"url": "postgresql://db/gw", "pool_size": 0}, "stores.postgres.pool_size"),
    ],
)
def test_bad_postgres_settings_name_their_key(base: dict[str, Any], postgres: dict[str, Any], expected: str) -> None:
    assert expected in _error({**base, "stores": {"postgres": postgres}})


@pytest.mark.parametrize(
    ("redis", "expected"),
    [
        ({"url": "http://cache:6379"}, "stores.redis.url must be redis://host:port/db"),
        ({"url": "redis://:pw@cache:6379/0"}, "stores.redis.url carries a password"),
        ({"url": "redis://cache:6379/0", "prefix": ""}, "stores.redis.prefix"),
    ],
)
def test_bad_redis_settings_name_their_key(base: dict[str, Any], redis: dict[str, Any], expected: str) -> None:
    assert expected in _error({**base, "stores": {"redis": redis}})


def test_each_store_says_where_it_keeps_its_state(base: dict[str, Any]) -> None:
    embedded = {b.store: b for b in store_backends(parse_config(base))}
    assert not any(b.shared for b in embedded.values())
    assert embedded["revocations"].backend.startswith("SQLite")
    shared = parse_config({**base, "stores": {"postgres": {"url": "postgresql://db/gw"}},
                           "counters": {"redis_url": "redis://cache:6379/0"}})  # fmt: skip
    backends = {b.store: b for b in store_backends(shared)}
    authorization = "authorization server (clients, codes, consents, refresh tokens)"
    assert {name for name, b in backends.items() if b.shared} == {"audit log", "revocations", authorization,
                                                                    "token vault", "approvals", "definition pins",
                                                                    "result volume baselines", "rates",
                                                                    "quotas"}  # fmt: skip
    for store in ("approvals", "definition pins", "result volume baselines"):
        assert backends[store].backend == "PostgreSQL"
        assert embedded[store].backend.startswith("SQLite")
    assert (backends[authorization].backend, backends["token vault"].backend) == ("PostgreSQL", "PostgreSQL (sealed)")
    with_redis = parse_config({**base, "stores": {"redis": {"url": "redis://cache:6379/1", "prefix": "gw:"}}})
    in_redis = {b.store: (b.backend, b.shared) for b in store_backends(with_redis)}
    for store in ("sessions", "session activity (caps, data-flow labels)", "continuations"):
        assert in_redis[store] == ("Redis", True)
        assert not backends[store].shared  # without stores.redis: this process's memory
    assert backends["revocations"].backend == "PostgreSQL"
    assert backends["rates"].backend == "Redis (redis://cache:6379/0)"
    assert not backends["tool catalogs"].must_share  # a cache each process rebuilds


def test_several_replicas_are_refused_while_a_store_is_embedded(base: dict[str, Any]) -> None:
    message = _error({**base, "stores": {"shared": True, "postgres": {"url": "postgresql://db/gw"}},
                      "counters": {"redis_url": "redis://cache:6379/0"}})  # fmt: skip
    assert "stores.shared: several replicas need every store shared" in message
    embedded = message.split("(one process only): ")[1].split(", ")
    assert embedded[:2] == ["signing keys", "sessions"]
    assert "revocations" not in message
    assert "audit log" not in message
    assert "rates" not in embedded
    assert "tool catalogs" not in message


def test_one_signing_key_file_for_every_replica_is_a_shared_store(base: dict[str, Any], tmp_path: Path) -> None:
    config = parse_config({**base, "identity": {"signing_keys_file": "secrets/signing-keys.json"}}, base_dir=tmp_path)
    assert config.identity.signing_keys_file == tmp_path / "secrets" / "signing-keys.json"
    keys = next(b for b in store_backends(config) if b.store == "signing keys")
    assert keys.shared
    assert keys.backend == f"file ({tmp_path}/secrets/signing-keys.json, the same for every replica)"
    message = _error({**base, "identity": {"signing_keys_file": "/run/keys.json"}, "stores": {"shared": True}})
    assert "signing keys" not in message.split("(one process only): ")[1].split(", ")


def test_several_replicas_are_accepted_once_every_store_is_shared(base: dict[str, Any]) -> None:
    shared = {"stores": {"shared": True, "postgres": {"url": "postgresql://db/gw"},
                         "redis": {"url": "redis://cache:6379/1"}},
              "counters": {"redis_url": "redis://cache:6379/0"},
              "identity": {"signing_keys_file": "/run/keys.json"}}  # fmt: skip
    config = parse_config({**base, **shared})
    assert config.stores.shared
    assert all(b.shared for b in store_backends(config) if b.must_share)
    without_redis = {**shared, "stores": {"shared": True, "postgres": {"url": "postgresql://db/gw"}}}
    embedded = "(one process only): sessions, session activity (caps, data-flow labels), continuations"
    assert embedded in _error({**base, **without_redis})
    without_counters = {key: value for key, value in shared.items() if key != "counters"}
    assert _error({**base, **without_counters}).split("(one process only): ")[1].split(", ") == ["rates", "quotas"]

"""``stores:``: where Bastion keeps its state, and whether the deployment has several replicas.

By default every store is embedded (SQLite in the data directory, or memory): one process. With
``stores.postgres`` the stores that have a PostgreSQL backend keep their records there, shared by
every replica; with ``stores.redis`` the short-lived ones (sessions, session activity, continuations);
``counters.redis_url`` does the same for rates and quotas. ``stores.shared: true``
says the deployment runs several replicas: the configuration is then refused while any store that
replicas must share is still embedded (``store_backends`` lists them), since a second replica would
see its own sessions, revocations, consents and audit chain instead of the others'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, model_validator

from bastion.config.base import SecretRef, _Model, check_service_url, url_with_password

if TYPE_CHECKING:
    from bastion.config.settings import BastionConfig

__all__ = ["PostgresSettings", "RedisSettings", "StoreBackend", "StoreSettings", "store_backends"]


class PostgresSettings(_Model):
    """``stores.postgres``: the PostgreSQL database the shared stores use.

    ``url`` is ``postgresql://user@host:5432/database`` (``?sslmode=require`` and the other libpq
    parameters asyncpg understands may follow); the password only by reference, ``password: {env:
    NAME}``. Every table lives in ``schema`` (created if missing); ``pool_size`` bounds each
    process's connections. ``replica_lost_s`` is how long (seconds) a replica's heartbeat may be
    silent before another replica declares it lost and closes the calls it left without an outcome
    (``bastion.audit.replicas``); it beats every sixth of that.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: str
    password: SecretRef | None = None
    db_schema: str = Field(default="bastion", alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pool_size: int = Field(default=10, ge=1, le=200)
    replica_lost_s: float = Field(default=30.0, ge=1.0, le=3600.0)

    @model_validator(mode="after")
    def _url(self) -> PostgresSettings:
        form = "postgresql://user@host:port/database"
        check_service_url(self.url, ("postgresql", "postgres"), "stores.postgres.url", form, "password")
        return self

    def resolved_url(self) -> str:
        """The URL with the password resolved into it. Raises ``ConfigError`` when the reference
        cannot be resolved."""
        return url_with_password(self.url, self.password)


class RedisSettings(_Model):
    """``stores.redis``: the Redis the shared short-lived stores use (sessions, session caps and data-flow
    labels, continuations). ``url`` is ``redis://host:port/db`` (``rediss://`` for TLS), the password
    only by reference, ``password: {env: NAME}``; every key starts with ``prefix``."""

    url: str
    password: SecretRef | None = None
    prefix: str = Field(default="bastion:", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _url(self) -> RedisSettings:
        check_service_url(self.url, ("redis", "rediss"), "stores.redis.url", "redis://host:port/db or rediss://...",
                          "password")  # fmt: skip
        return self

    def resolved_url(self) -> str:
        """The URL with the password resolved into it. Raises ``ConfigError`` when the reference
        cannot be resolved."""
        return url_with_password(self.url, self.password)


class StoreSettings(_Model):
    """``stores:``: ``postgres`` and ``redis`` (optional, see ``PostgresSettings`` and
    ``RedisSettings``) and ``shared`` (several replicas: refuse a configuration that leaves a store
    they must share embedded)."""

    postgres: PostgresSettings | None = None
    redis: RedisSettings | None = None
    shared: bool = False


@dataclass(frozen=True, slots=True)
class StoreBackend:
    """Where one store keeps its state: ``backend`` in words, whether replicas share it
    (``shared``), and whether they must (``must_share``: false for caches each process rebuilds)."""

    store: str
    backend: str
    shared: bool
    must_share: bool = True


_KEYS_NAME = "signing-keys.json"
"""The signing key file's name in the data directory (``bastion.identity.keys.KEYS_FILE``)."""


def store_backends(config: BastionConfig) -> list[StoreBackend]:
    """Every store of ``config``'s gateway and its backend, in the order ``bastion check`` prints them."""
    sqlite = f"SQLite ({config.data_dir}/bastion.db)"
    stores = config.stores
    postgres = stores.postgres
    redis = config.counters.redis_url
    keys_file = config.identity.signing_keys_file
    keys = f"file ({keys_file}, the same for every replica)" if keys_file else f"file ({config.data_dir}/{_KEYS_NAME})"
    in_redis = "Redis" if stores.redis else "memory (this process)"
    return [
        StoreBackend("audit log", "PostgreSQL (one chain)" if postgres else sqlite, shared=postgres is not None),
        StoreBackend("signing keys", keys, shared=keys_file is not None),
        StoreBackend("revocations", "PostgreSQL" if postgres else sqlite, shared=postgres is not None),
        StoreBackend("sessions", in_redis, shared=stores.redis is not None),
        StoreBackend(
            "authorization server (clients, codes, consents, refresh tokens)",
            "PostgreSQL" if postgres else sqlite,
            shared=postgres is not None,
        ),
        StoreBackend("token vault", "PostgreSQL (sealed)" if postgres else sqlite, shared=postgres is not None),
        StoreBackend("approvals", "PostgreSQL" if postgres else sqlite, shared=postgres is not None),
        StoreBackend("definition pins", "PostgreSQL" if postgres else sqlite, shared=postgres is not None),
        StoreBackend("result volume baselines", "PostgreSQL" if postgres else sqlite, shared=postgres is not None),
        StoreBackend("rates", f"Redis ({redis})" if redis else "memory (this process)", shared=redis is not None),
        StoreBackend("quotas", f"Redis ({redis})" if redis else sqlite, shared=redis is not None),
        StoreBackend("session activity (caps, data-flow labels)", in_redis, shared=stores.redis is not None),
        StoreBackend("continuations", in_redis, shared=stores.redis is not None),
        StoreBackend("tool catalogs", "memory (this process, rebuilt from the upstreams' lists)", False, False),
    ]

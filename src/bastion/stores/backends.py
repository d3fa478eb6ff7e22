"""The stores a configuration asks for: the shared backends where ``stores:`` names one, the embedded
ones otherwise (``bastion.config.stores.store_backends`` says which is which, for ``bastion check``).

The gateway and the CLI build their stores here, so a ``bastion token revoke`` reaches the same
revocation list as the replicas that serve.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import cast
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bastion.approvals.store import ApprovalStore
from bastion.approvals.store_postgres import PostgresApprovalStore
from bastion.approvals.store_sqlite import SQLiteApprovalStore
from bastion.audit.query import SQLiteAuditReader
from bastion.audit.store import ActivityReader, AuditLog
from bastion.audit.store_postgres import PostgresAuditLog, PostgresAuditReader
from bastion.audit.store_sqlite import SQLiteAuditLog
from bastion.catalog.pins import PinStore
from bastion.catalog.pins_postgres import PostgresPinStore
from bastion.catalog.pins_sqlite import SQLitePinStore
from bastion.config import BastionConfig
from bastion.credentials.vault_postgres import PostgresVaultStore
from bastion.credentials.vault_sqlite import SQLiteVaultStore
from bastion.credentials.vault_store import VaultStore
from bastion.errors import ConfigError
from bastion.identity.revocation import RevocationList
from bastion.oauth.store import AuthorizationStore
from bastion.oauth.store_postgres import PostgresAuthorizationStore
from bastion.oauth.store_sqlite import SQLiteAuthorizationStore
from bastion.stores.activity import ActivityStore
from bastion.stores.continuations import ContinuationStore
from bastion.stores.memory_activity import MemoryActivityStore
from bastion.stores.memory_continuations import MemoryContinuationStore
from bastion.stores.memory_sessions import MemorySessionStore
from bastion.stores.postgres import PostgresDatabase
from bastion.stores.postgres_revocations import PostgresRevocationStore
from bastion.stores.postgres_volume import PostgresVolumeStore
from bastion.stores.redis_activity import RedisActivityStore
from bastion.stores.redis_continuations import RedisContinuationStore
from bastion.stores.redis_sessions import RedisSessionStore
from bastion.stores.revocations import RevocationStore
from bastion.stores.sessions import Session, SessionStore
from bastion.stores.sqlite_volume import SQLiteVolumeStore
from bastion.stores.volume import VolumeStore

__all__ = [
    "DATABASE_FILE",
    "activity_store",
    "approval_store",
    "audit_log",
    "audit_reader",
    "authorization_store",
    "continuation_store",
    "pin_store",
    "postgres_database",
    "preflight",
    "reaching",
    "revocation_store",
    "session_store",
    "vault_store",
    "volume_store",
]

DATABASE_FILE = "bastion.db"
"""The embedded store: one SQLite file in the data directory."""


def postgres_database(config: BastionConfig) -> PostgresDatabase | None:
    """The PostgreSQL database of ``stores.postgres`` (not started), or None when it is not configured.
    Raises ``ConfigError`` when its password reference cannot be resolved."""
    settings = config.stores.postgres
    if settings is None:
        return None
    return PostgresDatabase(settings.resolved_url(), schema=settings.db_schema, max_size=settings.pool_size)


def revocation_store(
    config: BastionConfig, postgres: PostgresDatabase | None, *, recheck_s: float = 0.0
) -> RevocationStore:
    """The revocation list (not started): in ``postgres`` when given, else in the data directory's
    SQLite file, re-read at most every ``recheck_s`` seconds (0: on every check)."""
    if postgres is not None:
        return PostgresRevocationStore(postgres)
    return RevocationList(config.data_dir / DATABASE_FILE, recheck_s=recheck_s)


def authorization_store(config: BastionConfig, postgres: PostgresDatabase | None) -> AuthorizationStore:
    """The authorization server's records, flows and grants (not started): in ``postgres`` when given
    (a code issued by one replica is redeemed once on any; a consent given through one holds on all),
    else in the data directory's SQLite file."""
    if postgres is not None:
        return PostgresAuthorizationStore(postgres)
    return SQLiteAuthorizationStore(config.data_dir / DATABASE_FILE)


def vault_store(config: BastionConfig, postgres: PostgresDatabase | None) -> VaultStore:
    """The token vault's store of sealed records (not started): in ``postgres`` when given (every
    replica reads the tokens any of them stored), else in the data directory's SQLite file."""
    if postgres is not None:
        return PostgresVaultStore(postgres)
    return SQLiteVaultStore(config.data_dir / DATABASE_FILE)


def approval_store(config: BastionConfig, postgres: PostgresDatabase | None) -> ApprovalStore:
    """The approval requests (not started): in ``postgres`` when given (a grant made through any
    replica is consumed once, by whichever replica the call reaches), else in the data directory's
    SQLite file."""
    if postgres is not None:
        return PostgresApprovalStore(postgres)
    return SQLiteApprovalStore(config.data_dir / DATABASE_FILE)


def pin_store(config: BastionConfig, postgres: PostgresDatabase | None) -> PinStore:
    """The definition pins, held definitions and baselines (not started): in ``postgres`` when given
    (a pin taken or approved through any replica holds for all), else in the data directory's
    SQLite file."""
    if postgres is not None:
        return PostgresPinStore(postgres)
    return SQLitePinStore(config.data_dir / DATABASE_FILE)


def volume_store(config: BastionConfig, postgres: PostgresDatabase | None) -> VolumeStore:
    """The saved result volume baselines (not started; loaded at start, written behind): in
    ``postgres`` when given (a replica that starts learns from what the others saved), else in the
    data directory's SQLite file."""
    if postgres is not None:
        return PostgresVolumeStore(postgres)
    return SQLiteVolumeStore(config.data_dir / DATABASE_FILE)


def session_store(config: BastionConfig, on_forget: Callable[[Session], None]) -> SessionStore:
    """The MCP session store (not started): in ``stores.redis`` when set, else in this process's memory;
    idle after ``server.session_idle_s``, ``on_forget`` told of each session dropped for idleness.
    Raises ``ConfigError`` when the Redis password reference cannot be resolved."""
    idle_s = config.server.session_idle_s
    redis = config.stores.redis
    if redis is not None:
        return RedisSessionStore(
            redis.resolved_url(), prefix=f"{redis.prefix}session:", idle_s=idle_s, on_forget=on_forget
        )
    return MemorySessionStore(idle_s=idle_s, on_forget=on_forget)


def continuation_store(config: BastionConfig) -> ContinuationStore:
    """The request states and task ids issued to each principal (not started): in ``stores.redis`` when
    set (a state issued through one replica is continued through any), else in this process's memory.
    Raises ``ConfigError`` when the Redis password reference cannot be resolved."""
    redis = config.stores.redis
    if redis is not None:
        return RedisContinuationStore(redis.resolved_url(), prefix=f"{redis.prefix}cont:")
    return MemoryContinuationStore()


def activity_store(config: BastionConfig) -> ActivityStore:
    """Session caps and data-flow labels (not started): in ``stores.redis`` when set (one count per
    session whichever replica its calls reach), else in this process's memory. Raises ``ConfigError``
    when the Redis password reference cannot be resolved."""
    redis = config.stores.redis
    if redis is not None:
        return RedisActivityStore(redis.resolved_url(), prefix=f"{redis.prefix}act:")
    return MemoryActivityStore()


def audit_log(config: BastionConfig, postgres: PostgresDatabase | None, *, replica: str | None = None) -> AuditLog:
    """The audit log's writer (not started): in ``postgres`` when given (one chain for every replica,
    each row naming the writing ``replica``: ``bastion.audit.replicas``), else in the data directory's
    SQLite file with ``audit.synchronous``."""
    if postgres is not None:
        return PostgresAuditLog(postgres, replica=replica)
    return SQLiteAuditLog(config.data_dir / DATABASE_FILE, synchronous=config.audit.synchronous)


def audit_reader(config: BastionConfig, postgres: PostgresDatabase | None) -> ActivityReader:
    """A reader of the audit log ``audit_log`` writes (read-only; nothing to start)."""
    if postgres is not None:
        return PostgresAuditReader(postgres)
    return SQLiteAuditReader(config.data_dir / DATABASE_FILE)


@contextmanager
def reaching(what: str, url: str) -> Iterator[None]:
    """Turn a failure to reach the shared store ``what`` (``stores.postgres``, ...) at ``url`` into a
    ``ConfigError`` naming it and its host (never the password), for a clear one-line error."""
    try:
        yield
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError) as exc:
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        raise ConfigError(f"{what}: cannot reach {where}: {exc}") from None


def preflight(config: BastionConfig) -> None:
    """Check that the shared stores ``config`` names answer (``stores.postgres``, ``stores.redis``,
    ``counters.redis_url``), before anything starts. Raises ``ConfigError`` naming the first that
    does not (or whose password reference cannot be resolved). Does nothing for embedded stores."""
    asyncio.run(_preflight(config))


async def _preflight(config: BastionConfig) -> None:
    postgres = config.stores.postgres
    if postgres is not None:
        with reaching("stores.postgres", postgres.url):
            connection = await asyncpg.connect(postgres.resolved_url(), timeout=10)
            try:
                await connection.fetchval("SELECT 1")
            finally:
                await connection.close()
    redis_urls: list[tuple[str, str, str]] = []
    if config.stores.redis is not None:
        redis_urls.append(("stores.redis", config.stores.redis.url, config.stores.redis.resolved_url()))
    if config.counters.redis_url is not None:
        redis_urls.append(("counters.redis_url", config.counters.redis_url, str(config.counters.resolved_url())))
    for what, shown, url in redis_urls:
        with reaching(what, shown):
            async with Redis.from_url(url, socket_connect_timeout=10) as client:
                await cast("Awaitable[bool]", client.ping())  # typed sync-or-async by redis-py

"""The PostgreSQL and Redis every machine of ours and CI runs on loopback, as the tests use them: each
test in a PostgreSQL schema or under a Redis key prefix of its own, removed afterwards."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from tests.support.bastion_process import stop
from tests.support.e2e_helpers import wait_until

__all__ = [
    "POSTGRES_URL",
    "REDIS_URL",
    "PrivatePostgres",
    "delete_redis_keys",
    "drop_postgres_schema",
    "postgres_schema",
    "private_postgres",
    "private_redis",
]

REDIS_URL = "redis://127.0.0.1:6379/0"
"""The Redis every machine of ours and CI runs on loopback; each test uses a key prefix of its own."""


async def delete_redis_keys(prefix: str) -> None:
    """Delete every key named ``<prefix>...`` from the Redis at ``REDIS_URL``."""
    async with Redis.from_url(REDIS_URL) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)


POSTGRES_URL = os.environ.get("BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The PostgreSQL every machine of ours and CI runs on loopback (trust auth, database ``test``)."""


def postgres_schema(tmp_path: Path) -> str:
    """The schema of the test whose directory is ``tmp_path``: every handle of one test shares it."""
    return "t_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:24]


async def drop_postgres_schema(tmp_path: Path) -> None:
    """Drop the test's schema (``postgres_schema``) and everything in it."""
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{postgres_schema(tmp_path)}" CASCADE')
    finally:
        await connection.close()


REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@contextmanager
def private_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A throwaway Redis on 127.0.0.1:``port``, no persistence."""
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                                          text=True).stdout.strip() == "PONG", timeout_s=10)  # fmt: skip
        yield proc
    finally:
        stop(proc)


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A throwaway PostgreSQL cluster of the test's own (``initdb`` in a new directory under /tmp,
    owned by the ``postgres`` user: the server refuses to run as root, and pytest's own directories
    are closed to other users), on 127.0.0.1:``port``, trust auth, no fsync; ``stop`` and ``start``
    it as a fault would, its data kept between them."""

    def __init__(self, port: int) -> None:
        self.root, self.port = Path(tempfile.mkdtemp(prefix="bastion-test-pg-")), port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        shutil.chown(self.root, "postgres")
        self._as_postgres(PG_BIN / "initdb", "-D", self.root / "data", "-A", "trust", "-U", "postgres")

    def _as_postgres(self, *args: object) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True, capture_output=True,
                       timeout=60)  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.root / "data", "-o", options, "-l", self.root / "log",
                          "-w", "start")  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: as a crash, no shutdown checkpoint)."""
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.root / "data", "-m", mode, "-w", "stop")


@contextmanager
def private_postgres(port: int) -> Iterator[PrivatePostgres]:
    """A started ``PrivatePostgres``, stopped and removed afterwards."""
    server = PrivatePostgres(port)
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop("fast")
        shutil.rmtree(server.root, ignore_errors=True)

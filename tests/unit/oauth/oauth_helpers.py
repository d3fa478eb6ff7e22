"""Shared helpers for the oauth tests: one argon2id hash made once (hashing costs ~0.1 s), and the
authorization server served in process (``served``) with its real store, audit log and keys."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.testclient import TestClient
from tests.support.clock import FakeClock

from bastion.audit import SQLiteAuditLog
from bastion.config import BastionConfig
from bastion.egress import EgressGuard
from bastion.identity import RevocationList, SigningKeys, TokenIssuer
from bastion.oauth import AuthorizationServer, AuthorizationStore, SQLiteAuthorizationStore
from bastion.oauth.users import hash_password
from bastion.stores.memory_counters import MemoryRateCounter

PASSWORD = "correct horse battery staple"


@cache
def password_hash() -> str:
    """The argon2id hash of ``PASSWORD``, computed once per test session."""
    return hash_password(PASSWORD)


# --- added for the authorization server tests (requests, clients, store, grants, endpoints) ---

#: RFC 7636 appendix B: the example code verifier.
RFC7636_VERIFIER = "dBjftJeZ4CVP-mJ92K9pjJxh2f9mvw8h6HMQ1hLRyqI"


def s256(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (RFC 7636 section 4.2), derived here with hashlib."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, base64url-decoded without checking the signature."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@dataclass(frozen=True)
class AuditRow:
    """One row of ``audit_events`` with the fields the OAuth tests look at."""

    seq: int
    kind: str
    route: str
    subject: str | None
    target: str | None
    effect: str | None
    method: str
    reason: str | None
    arguments: Any


def audit_rows(database: Path) -> list[AuditRow]:
    """Every audit record in ``database``, oldest first."""
    with closing(sqlite3.connect(database)) as conn:
        rows = conn.execute(
            "SELECT seq, kind, route, subject, target, effect, record FROM audit_events ORDER BY seq"
        ).fetchall()
    found = []
    for seq, kind, route, subject, target, effect, record in rows:
        body = json.loads(record)
        decision = body.get("decision") or {}
        found.append(
            AuditRow(
                seq, kind, route, subject, target, effect, body["method"], decision.get("reason"), body["arguments"]
            )
        )
    return found


@dataclass
class Served:
    """A running in-process authorization server: its test client and its parts."""

    http: TestClient
    server: AuthorizationServer
    audit: SQLiteAuditLog
    revocations: RevocationList
    clock: FakeClock
    database: Path

    def run(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run an async function on the app's event loop (store and audit calls)."""
        portal = self.http.portal
        assert portal is not None
        return portal.call(func, *args)

    def mark(self) -> int:
        """The last audit seq so far: ``since(mark)`` then lists the records written after it."""
        rows = audit_rows(self.database)
        return rows[-1].seq if rows else 0

    def since(self, mark: int) -> list[AuditRow]:
        """The audit records written after ``mark``."""
        return [row for row in audit_rows(self.database) if row.seq > mark]


@contextmanager
def served(
    config: BastionConfig, data: Path, *, egress: EgressGuard | None = None, store: AuthorizationStore | None = None
) -> Iterator[Served]:
    """``AuthorizationServer`` for ``config`` on ``data`` (created if missing; reused after a restart),
    served by a Starlette ``TestClient`` at ``config.issuer``, with a ``FakeClock``. ``egress`` (closed
    on exit) reaches the identity providers; ``store`` keeps its records (default: SQLite in ``data``)."""
    data.mkdir(exist_ok=True)
    database = data / "bastion.db"
    keys = SigningKeys.load_or_create(data, verify_window_s=3600)
    audit = SQLiteAuditLog(database, linger_ms=0, synchronous="normal")
    clock = FakeClock()
    with RevocationList(database) as revocations:
        server = AuthorizationServer(
            config,
            store=store if store is not None else SQLiteAuthorizationStore(database),
            audit=audit,
            issuer=TokenIssuer(keys, config.issuer, 3600),
            revocations=revocations,
            rates=MemoryRateCounter(),
            fetch=None,
            egress=egress,
            clock=clock,
        )

        @asynccontextmanager
        async def lifespan(_: Starlette) -> Any:
            await audit.start()
            await server.start()
            try:
                yield
            finally:
                await server.close()
                await audit.close()
                if egress is not None:
                    await egress.aclose()

        app = Starlette(routes=server.routes(), lifespan=lifespan)
        with TestClient(app, base_url=config.issuer) as http:
            yield Served(http, server, audit, revocations, clock, database)

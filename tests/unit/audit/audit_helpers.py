"""Helpers for the audit tests: event factories and a raw second connection to the database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Literal

from bastion.audit.record import Decision, DecisionEvent, OutcomeEvent, Result, Upstream
from bastion.principal import Principal


def principal(sub: str) -> Principal:
    """A user principal named ``sub`` in group ``eng``."""
    return Principal(kind="User", sub=sub, issuer="https://bastion.test", auth_method="bastion_jwt",
                     expires_at=2_000_000_000, groups=("eng",))  # fmt: skip


def decision(
    n: int = 0,
    *,
    sub: str = "alice",
    route: str = "github",
    tool: str = "create_issue",
    effect: Literal["allow", "deny"] = "allow",
) -> DecisionEvent:
    """A tools/call decision event; a deny carries reason ``policy_denied``."""
    reason = "policy_denied" if effect == "deny" else None
    return DecisionEvent.create(
        route=route, method="tools/call", target=tool, principal=principal(sub),
        arguments={"n": n, "token": "ghp_" + "x" * 36}, session="s-1",
        decision=Decision(effect=effect, policy_ids=("p1",), reason=reason),
    )  # fmt: skip


def outcome(event: DecisionEvent) -> OutcomeEvent:
    """The successful outcome of ``event``."""
    return event.outcome(
        result=Result(error=False, request_bytes=100, response_bytes=2048),
        upstream=Upstream(credential_kind="oauth_user", status=200, duration_ms=12.5),
    )


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A second, independent read-write connection (autocommit), closed on exit."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn

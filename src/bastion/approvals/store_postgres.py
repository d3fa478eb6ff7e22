"""The shared ``ApprovalStore``: approval requests in the PostgreSQL database of ``stores.postgres``.

Every replica reads and writes the table ``approvals`` (migration ``0004_approvals.sql``), so a
request made through one replica is decided through another (the portal, ``bastion approvals``)
and its grant consumed by whichever replica the call reaches next. A waiting call sees the
decision on its next poll of the store (``ApprovalDesk.wait``, every second).

Each transition (``decide``, ``consume``, ``expire``) is ONE conditional statement, ``UPDATE ...
WHERE id = $n AND status = <the state it leaves> AND expires_at > now RETURNING ...``, in its own
transaction at PostgreSQL's default isolation (read committed). Two replicas racing for one row:
the second's ``UPDATE`` waits on the first's row lock, then re-checks its ``WHERE`` against the row
as committed (PostgreSQL re-evaluates an updated row), finds the status changed and updates
nothing. So a grant is consumed once across every replica, and a request decided once; the
loser gets ``None``, exactly as on SQLite.

Shapes: times are wall-clock epoch seconds (``DOUBLE PRECISION``); ``arguments`` and ``policy_ids``
are kept as JSON text (exactly what the client sent once redacted: no key reordering, no ``\\u0000``
limit as in ``jsonb``); ids compare bytewise (``COLLATE "C"``), so ties in "newest first" order as
on SQLite. A text field holding a NUL character is refused by PostgreSQL (an error, not a silent
change).

Errors: ``ValueError`` from ``create`` for an existing id or from ``list`` for a negative limit;
otherwise the driver's (``stores.postgres_tables.POSTGRES_ERRORS``) when the database cannot be
reached or refuses, and ``RuntimeError`` before ``start``: the approve stage then denies the call
(fail closed), the portal answers 500 and the CLI exits 2.
"""

from __future__ import annotations

import json
from typing import Any, get_args

import asyncpg

from bastion.approvals.model import ApprovalBinding, ApprovalRequest, ApprovalStats, ApprovalStatus
from bastion.stores.postgres_tables import PostgresTables

__all__ = ["PostgresApprovalStore"]

#: The table's columns, in the order ``_values`` and ``_request`` use.
_COLUMNS = (
    "id", "kind", "requester", "route", "tool", "arguments_sha256", "policy_version", "requester_label",
    "client_id", "arguments", "risk", "classification", "policy_ids", "decision_id", "created_at", "expires_at",
    "status", "decided_at", "approver", "approver_key", "reason", "consumed_at", "consumed_by",
)  # fmt: skip
_SELECT = ", ".join(_COLUMNS)
_INSERT = (
    f"INSERT INTO approvals ({_SELECT}) VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))}) "  # noqa: S608
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)
_NEWEST_FIRST = "ORDER BY created_at DESC, id DESC"
_FIND = (
    f"SELECT {_SELECT} FROM approvals WHERE requester = $1 AND route = $2 AND tool = $3 "  # noqa: S608
    "AND arguments_sha256 = $4 AND policy_version = $5 AND status IN ('pending', 'approved') "
    f"AND expires_at > $6 {_NEWEST_FIRST} LIMIT 1"
)
_DECIDE = (
    "UPDATE approvals SET status = $1, decided_at = $2, approver = $3, approver_key = $4, reason = $5, "  # noqa: S608
    "expires_at = COALESCE($6, expires_at) WHERE id = $7 AND status = 'pending' AND expires_at > $2 "
    f"RETURNING {_SELECT}"
)
_CONSUME = (
    "UPDATE approvals SET status = 'consumed', consumed_at = $1, consumed_by = $2 "  # noqa: S608
    f"WHERE id = $3 AND status = 'approved' AND expires_at > $1 RETURNING {_SELECT}"
)
_EXPIRE = (
    "UPDATE approvals SET status = 'expired' WHERE status IN ('pending', 'approved') "  # noqa: S608
    f"AND expires_at <= $1 RETURNING {_SELECT}"
)


def _values(request: ApprovalRequest) -> tuple[Any, ...]:
    """``request`` as the values of ``_COLUMNS``."""
    b = request.binding
    return (
        request.id, request.kind, b.requester, b.route, b.tool, b.arguments_sha256, b.policy_version,
        request.requester_label, request.client_id, json.dumps(request.arguments, ensure_ascii=False), request.risk,
        request.classification, json.dumps(list(request.policy_ids), ensure_ascii=False), request.decision_id,
        request.created_at, request.expires_at, request.status, request.decided_at, request.approver,
        request.approver_key, request.reason, request.consumed_at, request.consumed_by,
    )  # fmt: skip


def _request(row: asyncpg.Record) -> ApprovalRequest:
    """The request a row of ``_COLUMNS`` holds."""
    return ApprovalRequest(
        id=row["id"],
        kind=row["kind"],
        binding=ApprovalBinding(
            row["requester"], row["route"], row["tool"], row["arguments_sha256"], row["policy_version"]
        ),
        requester_label=row["requester_label"],
        client_id=row["client_id"],
        arguments=json.loads(row["arguments"]),
        risk=row["risk"],
        classification=row["classification"],
        policy_ids=tuple(json.loads(row["policy_ids"])),
        decision_id=row["decision_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        status=row["status"],
        decided_at=row["decided_at"],
        approver=row["approver"],
        approver_key=row["approver_key"],
        reason=row["reason"],
        consumed_at=row["consumed_at"],
        consumed_by=row["consumed_by"],
    )


class PostgresApprovalStore(PostgresTables):
    """``ApprovalStore`` in table ``approvals`` of ``database`` (see the module docstring)."""

    LABEL = "approval store"

    async def create(self, request: ApprovalRequest) -> None:
        """See ``ApprovalStore.create``."""
        if await self._pool.fetchval(_INSERT, *_values(request)) is None:
            raise ValueError(f"approval {request.id!r} exists")

    async def get(self, approval_id: str) -> ApprovalRequest | None:
        """See ``ApprovalStore.get``."""
        row = await self._pool.fetchrow(f"SELECT {_SELECT} FROM approvals WHERE id = $1", approval_id)  # noqa: S608
        return None if row is None else _request(row)

    async def find(self, binding: ApprovalBinding, now: float) -> ApprovalRequest | None:
        """See ``ApprovalStore.find``: one indexed read (``approvals_binding``)."""
        b = binding
        row = await self._pool.fetchrow(
            _FIND, b.requester, b.route, b.tool, b.arguments_sha256, b.policy_version, float(now)
        )
        return None if row is None else _request(row)

    async def decide(
        self,
        approval_id: str,
        *,
        approved: bool,
        approver: str,
        approver_key: str,
        reason: str,
        now: float,
        grant_ttl: float,
    ) -> ApprovalRequest | None:
        """See ``ApprovalStore.decide``: one conditional update (one winner across replicas)."""
        status = "approved" if approved else "denied"
        grant_expires_at = float(now) + grant_ttl if approved else None
        row = await self._pool.fetchrow(
            _DECIDE, status, float(now), approver, approver_key, reason, grant_expires_at, approval_id
        )
        return None if row is None else _request(row)

    async def consume(self, approval_id: str, *, decision_id: str, now: float) -> ApprovalRequest | None:
        """See ``ApprovalStore.consume``: one conditional update (one winner across replicas)."""
        row = await self._pool.fetchrow(_CONSUME, float(now), decision_id, approval_id)
        return None if row is None else _request(row)

    async def expire(self, now: float) -> list[ApprovalRequest]:
        """See ``ApprovalStore.expire``: one update; oldest first. Replicas sweeping at once each
        get the rows they marked (a row is marked once)."""
        rows = await self._pool.fetch(_EXPIRE, float(now))
        return sorted((_request(row) for row in rows), key=lambda r: (r.created_at, r.id))

    async def list(self, status: ApprovalStatus | None = None, *, limit: int = 100) -> list[ApprovalRequest]:
        """See ``ApprovalStore.list``; ties on ``created_at`` by id, descending. Raises ``ValueError``
        when ``limit`` is negative."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if status is None:
            rows = await self._pool.fetch(f"SELECT {_SELECT} FROM approvals {_NEWEST_FIRST} LIMIT $1", limit)  # noqa: S608
        else:
            rows = await self._pool.fetch(
                f"SELECT {_SELECT} FROM approvals WHERE status = $1 {_NEWEST_FIRST} LIMIT $2",  # noqa: S608
                status,
                limit,
            )
        return [_request(row) for row in rows]

    async def count(self, status: ApprovalStatus) -> int:
        """See ``ApprovalStore.count`` (the ``approvals_status_expiry`` index)."""
        return int(await self._pool.fetchval("SELECT count(*) FROM approvals WHERE status = $1", status))

    async def stats(self) -> ApprovalStats:
        """See ``ApprovalStore.stats``: every status counted (zero included), the median computed by
        PostgreSQL (``percentile_cont``, no rows fetched); one read-only snapshot."""
        async with (
            self._pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            counted = await connection.fetch("SELECT status, count(*) AS n FROM approvals GROUP BY status")
            median = await connection.fetchval(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY decided_at - created_at) "
                "FROM approvals WHERE decided_at IS NOT NULL"
            )
        counts = dict.fromkeys(get_args(ApprovalStatus), 0) | {row["status"]: row["n"] for row in counted}
        return ApprovalStats(counts=counts, median_decision_s=median)

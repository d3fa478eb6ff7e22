"""The embedded ``ApprovalStore``: approval requests in a table of the data directory's SQLite file.

Pending requests and grants survive a restart and are shared by replicas on one file.
The connection and transactions are ``bastion.stores.sqlite.SQLiteTables``': every
transition (decide, consume, expire) is one ``UPDATE ... WHERE <still in the state it
leaves> RETURNING`` in one ``BEGIN IMMEDIATE`` transaction, so two racers, even in two
processes, see exactly one winner. ``arguments`` and ``policy_ids`` are kept as JSON text.
"""

from __future__ import annotations

import json
import statistics
from typing import Any, get_args

from bastion.approvals.model import ApprovalBinding, ApprovalRequest, ApprovalStats, ApprovalStatus
from bastion.stores.sqlite import SQLiteTables

__all__ = ["SQLiteApprovalStore"]

_DDL = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('review', 'confirm')),
    requester TEXT NOT NULL, route TEXT NOT NULL, tool TEXT NOT NULL, arguments_sha256 TEXT NOT NULL,
    policy_version TEXT NOT NULL, requester_label TEXT NOT NULL, client_id TEXT NOT NULL,
    arguments TEXT NOT NULL, risk TEXT NOT NULL, classification TEXT NOT NULL, policy_ids TEXT NOT NULL,
    decision_id TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'consumed')),
    decided_at REAL, approver TEXT, approver_key TEXT, reason TEXT NOT NULL, consumed_at REAL, consumed_by TEXT);
CREATE INDEX IF NOT EXISTS approvals_binding
    ON approvals (requester, route, tool, arguments_sha256, policy_version);
CREATE INDEX IF NOT EXISTS approvals_status_expiry ON approvals (status, expires_at);
CREATE INDEX IF NOT EXISTS approvals_created ON approvals (created_at, id);
"""

#: The table's columns, in the order ``_row`` and ``_request`` use.
_COLUMNS = (
    "id", "kind", "requester", "route", "tool", "arguments_sha256", "policy_version", "requester_label",
    "client_id", "arguments", "risk", "classification", "policy_ids", "decision_id", "created_at", "expires_at",
    "status", "decided_at", "approver", "approver_key", "reason", "consumed_at", "consumed_by",
)  # fmt: skip
_SELECT = ", ".join(_COLUMNS)
_INSERT = (
    f"INSERT INTO approvals ({_SELECT}) VALUES ({', '.join('?' * len(_COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (id) DO NOTHING"
)
_NEWEST_FIRST = "ORDER BY created_at DESC, id DESC"


def _row(request: ApprovalRequest) -> tuple[Any, ...]:
    """``request`` as the values of ``_COLUMNS``."""
    b = request.binding
    return (
        request.id, request.kind, b.requester, b.route, b.tool, b.arguments_sha256, b.policy_version,
        request.requester_label, request.client_id, json.dumps(request.arguments, ensure_ascii=False), request.risk,
        request.classification, json.dumps(list(request.policy_ids), ensure_ascii=False), request.decision_id,
        request.created_at, request.expires_at, request.status, request.decided_at, request.approver,
        request.approver_key, request.reason, request.consumed_at, request.consumed_by,
    )  # fmt: skip


def _request(row: tuple[Any, ...]) -> ApprovalRequest:
    """The request a row of ``_COLUMNS`` holds."""
    (id_, kind, requester, route, tool, sha, version, label, client_id, arguments, risk, classification, policy_ids,
     decision_id, created_at, expires_at, status, decided_at, approver, approver_key, reason, consumed_at,
     consumed_by) = row  # fmt: skip
    return ApprovalRequest(
        id=id_,
        kind=kind,
        binding=ApprovalBinding(requester, route, tool, sha, version),
        requester_label=label,
        client_id=client_id,
        arguments=json.loads(arguments),
        risk=risk,
        classification=classification,
        policy_ids=tuple(json.loads(policy_ids)),
        decision_id=decision_id,
        created_at=created_at,
        expires_at=expires_at,
        status=status,
        decided_at=decided_at,
        approver=approver,
        approver_key=approver_key,
        reason=reason,
        consumed_at=consumed_at,
        consumed_by=consumed_by,
    )


class SQLiteApprovalStore(SQLiteTables):
    """``ApprovalStore`` on SQLite at ``path`` (the data directory's ``bastion.db``)."""

    DDL = _DDL
    LABEL = "approval store"

    async def create(self, request: ApprovalRequest) -> None:
        """See ``ApprovalStore.create``."""
        inserted = await self._run(lambda c: c.execute(_INSERT, _row(request)).rowcount)
        if not inserted:
            raise ValueError(f"approval {request.id!r} exists")

    async def get(self, approval_id: str) -> ApprovalRequest | None:
        """See ``ApprovalStore.get``."""
        row = await self._run(
            lambda c: c.execute(f"SELECT {_SELECT} FROM approvals WHERE id = ?", (approval_id,)).fetchone(),  # noqa: S608
            write=False,
        )
        return None if row is None else _request(row)

    async def find(self, binding: ApprovalBinding, now: float) -> ApprovalRequest | None:
        """See ``ApprovalStore.find``."""
        b = binding
        row = await self._run(
            lambda c: c.execute(
                f"SELECT {_SELECT} FROM approvals WHERE requester = ? AND route = ? AND tool = ? "  # noqa: S608
                "AND arguments_sha256 = ? AND policy_version = ? AND status IN ('pending', 'approved') "
                f"AND expires_at > ? {_NEWEST_FIRST} LIMIT 1",
                (b.requester, b.route, b.tool, b.arguments_sha256, b.policy_version, now),
            ).fetchone(),
            write=False,
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
        """See ``ApprovalStore.decide``: one conditional update."""
        status = "approved" if approved else "denied"
        grant_expires_at = now + grant_ttl if approved else None
        rows = await self._run(
            lambda c: c.execute(
                "UPDATE approvals SET status = ?, decided_at = ?, approver = ?, approver_key = ?, reason = ?, "  # noqa: S608
                "expires_at = COALESCE(?, expires_at) WHERE id = ? AND status = 'pending' AND expires_at > ? "
                f"RETURNING {_SELECT}",
                (status, now, approver, approver_key, reason, grant_expires_at, approval_id, now),
            ).fetchall()
        )
        return _request(rows[0]) if rows else None

    async def consume(self, approval_id: str, *, decision_id: str, now: float) -> ApprovalRequest | None:
        """See ``ApprovalStore.consume``: one conditional update."""
        rows = await self._run(
            lambda c: c.execute(
                "UPDATE approvals SET status = 'consumed', consumed_at = ?, consumed_by = ? "  # noqa: S608
                f"WHERE id = ? AND status = 'approved' AND expires_at > ? RETURNING {_SELECT}",
                (now, decision_id, approval_id, now),
            ).fetchall()
        )
        return _request(rows[0]) if rows else None

    async def expire(self, now: float) -> list[ApprovalRequest]:
        """See ``ApprovalStore.expire``: one update; oldest first."""
        rows = await self._run(
            lambda c: c.execute(
                "UPDATE approvals SET status = 'expired' WHERE status IN ('pending', 'approved') "  # noqa: S608
                f"AND expires_at <= ? RETURNING {_SELECT}",
                (now,),
            ).fetchall()
        )
        return sorted((_request(row) for row in rows), key=lambda r: (r.created_at, r.id))

    async def list(self, status: ApprovalStatus | None = None, *, limit: int = 100) -> list[ApprovalRequest]:
        """See ``ApprovalStore.list``; ties on ``created_at`` by id, descending. Raises ``ValueError``
        when ``limit`` is negative."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        where, params = ("WHERE status = ?", (status, limit)) if status is not None else ("", (limit,))
        rows = await self._run(
            lambda c: c.execute(f"SELECT {_SELECT} FROM approvals {where} {_NEWEST_FIRST} LIMIT ?", params).fetchall(),  # noqa: S608
            write=False,
        )
        return [_request(row) for row in rows]

    async def count(self, status: ApprovalStatus) -> int:
        """See ``ApprovalStore.count`` (the ``approvals_status_expiry`` index)."""
        row = await self._run(
            lambda c: c.execute("SELECT count(*) FROM approvals WHERE status = ?", (status,)).fetchone(), write=False
        )
        return int(row[0])

    async def stats(self) -> ApprovalStats:
        """See ``ApprovalStore.stats``: every status counted (zero included); one read transaction."""
        counted, waits = await self._run(
            lambda c: (
                c.execute("SELECT status, count(*) FROM approvals GROUP BY status").fetchall(),
                c.execute("SELECT decided_at - created_at FROM approvals WHERE decided_at IS NOT NULL").fetchall(),
            ),
            write=False,
        )
        counts = dict.fromkeys(get_args(ApprovalStatus), 0) | {status: count for status, count in counted}
        seconds = [row[0] for row in waits]
        return ApprovalStats(counts=counts, median_decision_s=statistics.median(seconds) if seconds else None)

"""The embedded ``AuditReader`` (``SQLiteAuditReader``) and the CLI's reads: iterate, tail, search, verify.

``SQLiteAuditReader.calls`` answers the portal's activity page: decision records of some
methods, each with its outcome.

The reads open the database read-only (``mode=ro``) in the calling process, so
they work while a gateway is writing. A file without the ``audit_events`` table reads
as an empty log. Records are returned as dicts with the keys of ``record.RECORD_KEYS``,
in ``seq`` order. Time bounds compare RFC 3339 UTC text, which sorts like time.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bastion.audit.chain import VerifyResult, verify_chain
from bastion.audit.schema import COLUMNS, index_columns
from bastion.audit.store import EventFilter

__all__ = [
    "Call",
    "EventFilter",
    "SQLiteAuditReader",
    "iter_events",
    "search",
    "tail",
    "verify",
    "verify_rows",
    "where_clause",
]

_SELECT_ALL = f"SELECT {', '.join(COLUMNS)} FROM audit_events ORDER BY seq"  # noqa: S608 - constants only
_AFTER = "SELECT seq, hash, record FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?"
_CHUNK = 500
"""Decision ids per outcome query (SQLite allows 32766 parameters; this stays far below)."""

Call = tuple[dict[str, Any], dict[str, Any] | None]
"""A decision record and the outcome record of the same ``decision_id`` (``None`` when there is none)."""


class SQLiteAuditReader:
    """``AuditReader`` on the ``audit_events`` table of the SQLite file at ``path``, read-only.
    A file without the table reads as an empty log; a missing file raises ``FileNotFoundError``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self, filters: EventFilter | None = None) -> Iterator[dict[str, Any]]:
        """See ``AuditReader.events``."""
        f = filters or EventFilter()
        where, params = _where(f)
        order = "DESC" if f.newest_first else "ASC"
        sql = f"SELECT record FROM audit_events{where} ORDER BY seq {order}"  # noqa: S608 - fixed fragments
        if f.limit is not None:
            sql += " LIMIT ?"
            params.append(int(f.limit))
        with closing(_connect(self.path)) as conn:
            if not _has_table(conn):
                return
            cursor = conn.execute(sql, params)
            rows = reversed(cursor.fetchall()) if f.newest_first else cursor
            for row in rows:
                yield json.loads(row[0])

    def calls(
        self, methods: Collection[str], filters: EventFilter | None = None, *, issuer: str | None = None
    ) -> list[Call]:
        """The decision records whose ``method`` is one of ``methods`` and that match ``filters``
        (its ``kind`` and ``newest_first`` are ignored) and, when given, whose principal's
        ``issuer`` is ``issuer``, NEWEST first, at most ``filters.limit``,
        each paired with the outcome record of the same ``decision_id``: ``None`` for a deny (which
        has no outcome), a call still running, or one cut short. Every value is a bound parameter.
        A file without the table reads as no calls; a missing file raises ``FileNotFoundError``."""
        if not methods:
            return []
        f = dataclasses.replace(filters or EventFilter(), kind="decision")
        where, params = _where(f)
        where += f" AND json_extract(record, '$.method') IN ({', '.join('?' * len(methods))})"
        params.extend(methods)
        if issuer is not None:
            where += " AND json_extract(record, '$.principal.issuer') = ?"
            params.append(issuer)
        sql = f"SELECT record FROM audit_events{where} ORDER BY seq DESC"  # noqa: S608 - fixed fragments
        if f.limit is not None:
            sql += " LIMIT ?"
            params.append(int(f.limit))
        with closing(_connect(self.path)) as conn:
            if not _has_table(conn):
                return []
            decisions = [json.loads(row[0]) for row in conn.execute(sql, params)]
            ids = list(dict.fromkeys(str(d.get("decision_id")) for d in decisions))
            outcomes: dict[str, dict[str, Any]] = {}
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                rows = conn.execute(
                    "SELECT record FROM audit_events WHERE kind = 'outcome' AND decision_id IN"  # noqa: S608 - marks only
                    f" ({', '.join('?' * len(chunk))}) ORDER BY seq",
                    chunk,
                )
                for row in rows:
                    record = json.loads(row[0])
                    outcomes.setdefault(str(record.get("decision_id")), record)
        return [(d, outcomes.get(str(d.get("decision_id")))) for d in decisions]

    def verify(self) -> VerifyResult:
        """See ``AuditReader.verify``: the chain, and that the search columns agree with each record.

        ``ok`` is false at the first record modified, deleted, inserted or reordered (see
        ``chain.VerifyResult``). Removing the newest records is NOT detected by the chain
        alone: compare ``last_seq``/``last_hash`` with a value kept from an earlier run.
        """
        with closing(_connect(self.path)) as conn:
            if not _has_table(conn):
                return verify_chain(())
            return verify_rows(conn.execute(_SELECT_ALL))

    def hash_at(self, seq: int) -> str | None:
        """See ``AuditReader.hash_at``."""
        with closing(_connect(self.path)) as conn:
            if not _has_table(conn):
                return None
            row = conn.execute("SELECT hash FROM audit_events WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    def after(self, seq: int, limit: int) -> list[tuple[int, str, str]]:
        """``(seq, hash, record text)`` of at most ``limit`` records with a ``seq`` above ``seq``,
        ascending (the audit exporter's read: one primary-key range)."""
        with closing(_connect(self.path)) as conn:
            if not _has_table(conn):
                return []
            rows = conn.execute(_AFTER, (seq, limit)).fetchall()
        return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]


def verify_rows(rows: Iterable[Sequence[Any]]) -> VerifyResult:
    """Verify stored rows (the ``COLUMNS`` of ``audit_events``, in ascending ``seq``): the chain of
    the ``record`` texts (``chain.verify_chain``), and that each row's search columns and ``hash``
    agree with its record (a row whose columns were edited is "modified"). Any backend's reader."""
    mismatch: list[tuple[int, str]] = []  # (seq, prev_hash) of the first row whose columns disagree

    def records() -> Iterator[dict[str, Any]]:
        for row in rows:
            try:
                record = json.loads(row[-2])
            except ValueError:
                record = None
            if not isinstance(record, dict):
                yield {"seq": row[0], "hash": None}  # fails the hash check: "modified"
                continue
            columns_agree = tuple(row[1:-2]) == index_columns(record)[1:] and row[-1] == record.get("hash")
            if not mismatch and not columns_agree:
                mismatch.append((row[0], str(record.get("prev_hash"))))
            yield record

    result = verify_chain(records())
    if mismatch and (result.first_bad_seq is None or mismatch[0][0] < result.first_bad_seq):
        bad, prev = mismatch[0]
        return VerifyResult(
            ok=False, checked=result.checked, first_bad_seq=bad, problem="modified",
            message=f"FAILED at seq {bad}: modified: the search columns do not match the record",
            last_seq=bad - 1, last_hash=prev,
        )  # fmt: skip
    return result


def iter_events(path: Path, filters: EventFilter | None = None) -> Iterator[dict[str, Any]]:
    """Yield matching records in ascending ``seq`` (``SQLiteAuditReader(path).events``).
    Raises ``FileNotFoundError`` if ``path`` is missing."""
    return SQLiteAuditReader(path).events(filters)


def tail(path: Path, n: int = 20) -> list[dict[str, Any]]:
    """The last ``n`` records, oldest first."""
    return list(iter_events(path, EventFilter(limit=n, newest_first=True)))


def search(
    path: Path, *, subject: str | None = None, route: str | None = None, tool: str | None = None,
    decision: Literal["allow", "deny"] | None = None, since: datetime | str | None = None,
    until: datetime | str | None = None, limit: int | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Records matching every given condition (see ``EventFilter``), oldest first; the NEWEST ``limit``."""
    f = EventFilter(
        subject=subject, route=route, tool=tool, decision=decision, since=since, until=until,
        limit=limit, newest_first=limit is not None,
    )  # fmt: skip
    return list(iter_events(path, f))


def verify(path: Path) -> VerifyResult:
    """Verify the log at ``path`` (``SQLiteAuditReader(path).verify``)."""
    return SQLiteAuditReader(path).verify()


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"no audit database at {path}")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _has_table(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'").fetchone()
    return row is not None


def _where(f: EventFilter) -> tuple[str, list[Any]]:
    return where_clause(f, lambda _n: "?")


def where_clause(f: EventFilter, mark: Callable[[int], str]) -> tuple[str, list[Any]]:
    """The SQL ``WHERE`` of ``f`` over the ``audit_events`` columns (empty when it has no condition) and
    its parameters; ``mark(n)`` writes the n-th parameter's placeholder (``?``, ``$1``). Time bounds
    are compared as stored RFC 3339 text; a naive bound raises ``ValueError``."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("subject", f.subject), ("route", f.route), ("target", f.tool),
        ("effect", f.decision), ("kind", f.kind),
    ):  # fmt: skip
        if value is not None:
            params.append(value)
            clauses.append(f"{column} = {mark(len(params))}")
    for op, bound in ((">=", f.since), ("<", f.until)):
        if bound is not None:
            params.append(_rfc3339(bound))
            clauses.append(f"time {op} {mark(len(params))}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _rfc3339(value: datetime | str) -> str:
    """A bound as the stored text form; naive datetimes are refused (``ValueError``)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("time bounds must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

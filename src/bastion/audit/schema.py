"""The SQLite table of the audit log, shared by the writer (``store``) and the readers (``query``).

The database file (``<data_dir>/bastion.db``) also holds other modules' tables; this
module creates only ``audit_events`` and its indexes. The ``record`` column holds the
canonical JSON of the whole record including ``hash``, and is the truth; the other
columns are copies for searching (``verify`` checks they agree with ``record``).
``seq`` is the chain sequence number and the row order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["COLUMNS", "DDL", "INSERT", "index_columns"]

COLUMNS = (
    "seq",
    "id",
    "kind",
    "time",
    "decision_id",
    "route",
    "subject",
    "target",
    "effect",
    "record",
    "hash",
)

DDL = """
CREATE TABLE IF NOT EXISTS audit_events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    time TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    route TEXT NOT NULL,
    subject TEXT,
    target TEXT,
    effect TEXT,
    record TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (time);
CREATE INDEX IF NOT EXISTS audit_events_decision_id ON audit_events (decision_id);
CREATE INDEX IF NOT EXISTS audit_events_subject ON audit_events (subject, seq);
CREATE INDEX IF NOT EXISTS audit_events_route ON audit_events (route, seq);
CREATE INDEX IF NOT EXISTS audit_events_target ON audit_events (target, seq);
"""

INSERT = f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608 - constants only


def index_columns(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The searchable column values of a record, in ``COLUMNS`` order without ``record``/``hash``.

    ``subject`` is ``principal.sub`` (null when unauthenticated); ``effect`` is
    ``decision.effect`` for decision events and null for outcome events.
    """
    principal = record.get("principal")
    decision = record.get("decision")
    return (
        record.get("seq"),
        record.get("id"),
        record.get("kind"),
        record.get("time"),
        record.get("decision_id"),
        record.get("route"),
        principal.get("sub") if isinstance(principal, dict) else None,
        record.get("target"),
        decision.get("effect") if isinstance(decision, dict) else None,
    )

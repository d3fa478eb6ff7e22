"""Helpers for the audit tests: the event factories (``tests.support.audit_events``) and a raw second
connection to the database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from tests.support.audit_events import decision, outcome, principal

__all__ = ["decision", "outcome", "principal", "raw"]


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A second, independent read-write connection (autocommit), closed on exit."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn

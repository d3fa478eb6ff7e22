"""The audit log: versioned records, redaction, the hash chain, the store (``AuditLog``, ``AuditReader``) on SQLite.

Write path (gateway): build a ``DecisionEvent`` with ``DecisionEvent.create(...)`` and
``await log.append(event)`` before forwarding (``AuditUnavailable`` means refuse the
call); after the upstream answered, ``log.append_nowait(event.outcome(...))``.
Read path (CLI): ``tail``, ``search``, ``iter_events``, ``verify``, then
``render_table`` or ``to_json_lines``.
"""

from bastion.audit.canonical import NotCanonicalizable, arguments_sha256, canonical
from bastion.audit.chain import GENESIS_HASH, VerifyResult, record_hash, verify_chain
from bastion.audit.query import SQLiteAuditReader, iter_events, search, tail, verify
from bastion.audit.record import (
    RECORD_KEYS,
    RECORD_VERSION,
    Approval,
    AuditEvent,
    Decision,
    DecisionEvent,
    OutcomeEvent,
    PrincipalInfo,
    Result,
    Upstream,
)
from bastion.audit.redact import redact
from bastion.audit.render import render_table, to_json_lines
from bastion.audit.store import AuditLog, AuditReader, EventFilter
from bastion.audit.store_sqlite import SQLiteAuditLog

__all__ = [
    "GENESIS_HASH",
    "RECORD_KEYS",
    "RECORD_VERSION",
    "Approval",
    "AuditEvent",
    "AuditLog",
    "AuditReader",
    "Decision",
    "DecisionEvent",
    "EventFilter",
    "NotCanonicalizable",
    "OutcomeEvent",
    "PrincipalInfo",
    "Result",
    "SQLiteAuditLog",
    "SQLiteAuditReader",
    "Upstream",
    "VerifyResult",
    "arguments_sha256",
    "canonical",
    "iter_events",
    "record_hash",
    "redact",
    "render_table",
    "search",
    "tail",
    "to_json_lines",
    "verify",
    "verify_chain",
]

"""The public API of ``bastion.audit`` is pinned: a change here is a deliberate API change."""

from __future__ import annotations

import bastion.audit as audit

EXPECTED = {
    "GENESIS_HASH", "RECORD_KEYS", "RECORD_VERSION", "Approval", "AuditEvent", "AuditLog", "AuditReader", "Decision",
    "DecisionEvent", "EventFilter", "NotCanonicalizable", "OutcomeEvent", "PrincipalInfo", "Result",
    "SQLiteAuditLog", "SQLiteAuditReader", "Upstream", "VerifyResult", "arguments_sha256", "canonical", "iter_events",
    "record_hash", "redact", "render_table", "search", "tail", "to_json_lines", "verify", "verify_chain",
}  # fmt: skip


def test_all_is_pinned() -> None:
    assert set(audit.__all__) == EXPECTED


def test_every_export_exists_and_is_documented() -> None:
    for name in audit.__all__:
        member = getattr(audit, name)
        if callable(member) and not name.isupper() and name != "AuditEvent":
            assert member.__doc__, name

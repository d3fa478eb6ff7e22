"""The top-level public API is exactly what ``bastion.__all__`` says (STYLE.md 11)."""

from __future__ import annotations

import bastion


def test_all_names_are_exported_and_nothing_else_public_is_added() -> None:
    assert sorted(bastion.__all__) == [
        "AuditUnavailable", "AuthenticationError", "BastionConfig", "BastionError", "ConfigError", "Gateway",
        "PolicyDenied", "Principal", "SessionNotFound", "TransportError", "UpstreamError", "load_config",
        "parse_config",
    ]  # fmt: skip
    for name in bastion.__all__:
        assert getattr(bastion, name) is not None

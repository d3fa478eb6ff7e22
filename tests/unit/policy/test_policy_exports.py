"""The public API of ``bastion.policy`` is pinned."""

from __future__ import annotations

import bastion.policy


def test_exported_members() -> None:
    assert sorted(bastion.policy.__all__) == [
        "ACTIONS",
        "CaseResult",
        "DEFAULT_DENY",
        "Decision",
        "MAX_DEPTH",
        "NULL_ENTITY",
        "PolicyEngine",
        "PolicyTestReport",
        "ResourceRef",
        "ToolFacts",
        "ToolInventory",
        "render",
        "run_policy_tests",
        "to_cedar_arguments",
        "tool_risk",
    ]
    for name in bastion.policy.__all__:
        member = getattr(bastion.policy, name)
        if callable(member):
            assert member.__doc__, name

"""Cedar policy for Bastion: the entity model, the engine, argument conversion and tests.

docs/architecture.md, "Policy model". ``PolicyEngine.load`` reads and validates policies at
start; ``decide`` answers one request and ``filter_allowed`` a listing, both failing
closed. ``run_policy_tests`` runs the table-driven cases behind ``bastion policy test``.
"""

from bastion.policy.convert import MAX_DEPTH, NULL_ENTITY, to_cedar_arguments
from bastion.policy.engine import PolicyEngine
from bastion.policy.inventory import ToolFacts, ToolInventory
from bastion.policy.model import ACTIONS, DEFAULT_DENY, Decision, ResourceRef, tool_risk
from bastion.policy.testing import CaseResult, PolicyTestReport, render, run_policy_tests

__all__ = [
    "ACTIONS",
    "DEFAULT_DENY",
    "MAX_DEPTH",
    "NULL_ENTITY",
    "CaseResult",
    "Decision",
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

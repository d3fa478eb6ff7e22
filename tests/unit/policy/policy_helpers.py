"""Helpers for the policy tests: principals, tools, a small policy set."""

from __future__ import annotations

from bastion.policy import ResourceRef
from bastion.principal import Principal

ENGINE_POLICIES = """
@id("dev-read-logs")
permit (principal in Group::"dev", action == Action::"tools/call", resource == Tool::"demo/read_logs")
when { context.arguments has env && context.arguments.env == "dev" };

@id("dev-read-tools")
permit (principal in Group::"dev", action == Action::"tools/call", resource in Server::"demo")
when { resource.risk == "read" && resource.name != "read_logs" };

@id("ops-all-tools")
@approval("review")
permit (principal in Group::"ops", action == Action::"tools/call", resource in Server::"demo");

@id("contractors-no-destructive")
@reason("contractors never change production")
forbid (principal in Group::"contractors", action, resource is Tool)
when { resource.risk == "destructive" };
"""


def user(*groups: str, sub: str = "alice", **fields: object) -> Principal:
    """A User principal in ``groups``."""
    return Principal(
        kind="User",
        sub=sub,
        issuer="https://idp.example.test",
        auth_method="bastion_jwt",
        expires_at=0,
        groups=groups,
        **fields,  # type: ignore[arg-type]
    )


def tool(name: str, **annotations: object) -> ResourceRef:
    """A tool on route ``demo`` with the given MCP annotations (a route that trusts them)."""
    return ResourceRef.from_tool("demo", {"name": name, "annotations": annotations}, trust_annotations=True)

"""``bastion check``: validate everything that can be validated without starting anything."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bastion.config import BastionConfig
from bastion.gateway import resolve_values
from bastion.policy import PolicyEngine

__all__ = ["check_config"]


def check_config(config: BastionConfig, console: Console) -> None:
    """Load the policies against the schema and resolve every secret reference.

    Raises ``ConfigError`` naming the first problem. Prints a summary on success.
    """
    engine = PolicyEngine.load(config.policy.files, config.policy.schema_file)
    table = Table(title="routes", show_lines=False)
    for column in ("route", "path", "resource URI", "upstream"):
        table.add_column(column)
    for route in config.routes:
        if route.http is not None:
            resolve_values(route.http.headers, f"routes.{route.name}.http.headers")
            upstream = f"http {route.http.url}"
        elif route.stdio is not None:
            resolve_values(route.stdio.env, f"routes.{route.name}.stdio.env")
            upstream = "stdio " + " ".join((route.stdio.command, *route.stdio.args))
        else:  # pragma: no cover - excluded by RouteSettings validation
            upstream = "?"
        table.add_row(route.name, route.public_path, config.resource_uri(route), upstream)
    console.print(table)
    console.print(f"policies: {len(engine.policy_ids)} loaded and validated (version {engine.version[:12]})")
    console.print(f"issuer: {config.issuer}  max token TTL: {config.identity.max_token_ttl}s")
    console.print("[bold green]OK[/]")
